"""After a sweep: close every trial's MLflow run with its reason, and log the leaderboard on the parent."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import RunStatus


def _last(client, run_id: str, key: str) -> float | None:
    history = client.get_metric_history(run_id, key)
    return max(history, key=lambda m: m.step).value if history else None


def close_trials(client, parent: str, grid, metric: str, mode: str, max_epochs: int) -> list[dict[str, Any]]:
    """One row per trial, best first, from what Tune saw (the scheduler ranks on that).

    When Tune stops a trial (ASHA, or the budget's last epoch) it removes the trial's placement group,
    so the trial's training ends with an ActorDiedError and its MLflow run may say FAILED or still
    RUNNING. Tune's result tells the truth: no error means the run FINISHED, tagged
    `genforge.stopped_early` when the scheduler cut it short; an error means FAILED with the reason.
    The run that retrains the winner (`tune.retrain_epochs`) is a child of the parent too, and no trial.
    """
    by_trial = {}
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id:
            by_trial[trial_id] = result
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000
    )
    rows = []
    for child in children:
        if "genforge.retrain_of" in child.data.tags:  # the winner retrained (tune.retrain_epochs): not a trial
            continue
        run_id, trial_id = child.info.run_id, child.data.tags.get("genforge.trial_id", "?")
        result = by_trial.get(trial_id)
        if result is None:  # not in this grid (e.g. a trial Tune never reported on): MLflow's view
            status, reason = child.info.status, child.data.tags.get("genforge.end_reason", "")
            epochs, objective, config = int(_last(client, run_id, "epoch") or 0), _last(client, run_id, metric), {}
            if status == RunStatus.to_string(RunStatus.RUNNING):
                status, reason = "KILLED", "the sweep ended before this trial reported"
                client.set_terminated(run_id, status)
        else:
            epochs = int((result.metrics or {}).get("training_iteration", 0))
            objective = (result.metrics or {}).get(metric)
            config = dict(result.config)
            if result.error is not None:
                status, reason = "FAILED", str(result.error).strip().splitlines()[-1][:500]
            else:
                status = "FINISHED"
                reason = ("completed" if epochs >= max_epochs
                          else f"stopped early by the scheduler after {epochs} of {max_epochs} epochs")
                if epochs < max_epochs:
                    client.set_tag(run_id, "genforge.stopped_early", reason)
            client.set_tag(run_id, "genforge.end_reason", reason)
            if child.info.status != status:
                client.set_terminated(run_id, status)
        rows.append({"trial_id": trial_id, "run_id": run_id, "status": status, "epochs": epochs,
                     "objective": objective if status != "FAILED" else None, "config": config, "reason": reason})
    sign = 1 if mode == "min" else -1

    def key(row):
        value = row["objective"]
        return (0, sign * value) if value is not None and math.isfinite(value) else (1, 0)

    rows.sort(key=key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def log_leaderboard(client, parent: str, rows: list[dict[str, Any]], keys: list[str], metric: str, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "leaderboard.json").write_text(json.dumps(rows, indent=2, default=str))
        with open(out / "leaderboard.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "trial_id", "run_id", "status", "epochs", metric, *keys, "reason"])
            for r in rows:
                writer.writerow([r["rank"], r["trial_id"], r["run_id"], r["status"], r["epochs"], r["objective"],
                                 *[r["config"].get(k) for k in keys], r["reason"]])
        best = next((r for r in rows if r["objective"] is not None), None)
        if best:
            chosen = {"objective": best["objective"], "metric": metric, **best["config"]}
            (out / "best_config.json").write_text(json.dumps(chosen, indent=2))
        fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
        for ax, k in zip(axes[0], keys):
            points = [(r["config"].get(k), r["objective"]) for r in rows
                      if r["objective"] is not None and k in r["config"]]
            if points:
                xs, ys = zip(*points)
                chosen_point = (best["config"].get(k), best["objective"]) if best else None
                ax.scatter(xs, ys, c=["tab:red" if (x, y) == chosen_point else "tab:blue" for x, y in points])
                if all(isinstance(x, (int, float)) and x > 0 for x in xs) and max(xs) / min(xs) > 20:
                    ax.set_xscale("log")
            ax.set_xlabel(k)
            ax.set_ylabel(f"{metric} ({mode})")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "objective_vs_hyperparameters.png", dpi=110)
        plt.close(fig)
        client.log_artifacts(parent, tmp, "sweep")
