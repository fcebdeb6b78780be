"""Training-health signals: posterior collapse (VAEs), mode collapse and an overpowering discriminator (GANs).

Pure torch (no Ray, no MLflow): the trainers compute the signals, `HealthMonitor` turns them into 0/1 flags
under "health/" and one-line warnings at the onset and at the end of each condition.

Signals:
  kl_per_dimension(mu, logvar)       batch mean of KL(q(z|x) || N(0, I)) per latent dimension
  active_units(mu)                   Burda et al. 2016's active units
  sample_diversity(samples, ref)     mean pairwise L2 distance of samples over that of real images
  class_coverage(probs)              share of classes that get at least 20% of their fair share of samples
  class_entropy(probs)               normalised entropy of the predicted class histogram
  discriminator_accuracy(real, fake) share of real logits > 0 and of fake logits < 0
"""

from __future__ import annotations

import math
from collections import deque

import torch

# HealthMonitor's rules. The thresholds are this module's heuristics (the papers cited define the signals,
# not these cut-offs); every one can be overridden in HealthMonitor's constructor.
WINDOW = 5  # D accuracies are averaged over the last WINDOW updates that carry them
D_ACC_MAX = 0.99  # D overpowers when its mean accuracy on real AND on fake is >= this over the window
MIN_DIVERSITY = 0.25  # mode collapse below this sample_diversity (1 = as diverse as real images)
MIN_COVERAGE = 0.5  # mode collapse below this class_coverage (half the classes starved of samples)
MIN_ACTIVE_SHARE = 0.1  # posterior collapse below this share of active units (needs latent_dim)
MIN_KL_MAX_DIM = 0.01  # posterior collapse when even the most informative dimension carries < this KL (nats)

PAIR_CHUNK_ELEMENTS = 2**24  # sample_diversity's pair differences per chunk: 64 MiB of float32 at most


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(D,) batch mean of the analytic KL(N(mu, exp(logvar)) || N(0, 1)) of each latent dimension, in nats.

    Per image and dimension 0.5 * (mu^2 + exp(logvar) - 1 - logvar): Kingma & Welling 2014 ("Auto-Encoding
    Variational Bayes", appendix B), the per-dimension terms of the KL that models/vae.py sums. A dimension whose
    mean KL is ~0 carries no information about x (posterior collapse, Bowman et al. 2016).
    mu, logvar: (N, D) encoder outputs (VAE.encode).
    """
    if mu.dim() != 2 or mu.shape != logvar.shape or mu.shape[0] == 0:
        raise ValueError(f"mu and logvar must be non-empty (N, D) tensors of one shape, got {mu.shape}, {logvar.shape}")
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean(0)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of active latent dimensions: Burda, Grosse & Salakhutdinov 2016 ("Importance Weighted
    Autoencoders", sec. 5.2), A_u = Cov_x(E_{u~q(u|x)}[u]) > 10^-2.

    The variance over the data of each dimension of the posterior mean mu(x), counted when strictly above
    `threshold`. The variance is the biased (population, divide by N) one, as numpy's default np.var.
    mu: (N, D) posterior means over a whole split (concatenate the batches: the variance is over the data).
    """
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must be an (N, D) tensor with N >= 2, got {tuple(mu.shape)}")
    variance = mu.double().var(dim=0, correction=0)
    return int((variance > threshold).sum())


def _mean_pairwise_distance(x: torch.Tensor, pairs: int | None, generator: torch.Generator) -> float:
    """Mean L2 distance over all pairs i < j (when pairs is None or covers them all) or over `pairs` random
    pairs i != j drawn uniformly with `generator`."""
    n, x = x.shape[0], x.float()  # float32 distances, summed in float64
    if pairs is None or pairs >= n * (n - 1) // 2:
        return float(torch.pdist(x).double().mean())
    i = torch.randint(0, n, (pairs,), generator=generator)
    j = (i + torch.randint(1, n, (pairs,), generator=generator)) % n  # uniform over j != i
    i, j = i.to(x.device), j.to(x.device)
    total, chunk = 0.0, max(1, PAIR_CHUNK_ELEMENTS // max(x.shape[1], 1))
    for a, b in zip(i.split(chunk), j.split(chunk)):
        total += float(torch.linalg.vector_norm(x[a] - x[b], dim=1).double().sum())
    return total / pairs


def sample_diversity(samples: torch.Tensor, reference: torch.Tensor, pairs: int | None = 2048, seed: int = 0) -> float:
    """Mean pairwise L2 distance among generated samples over the same among real reference images.

    ~1 for a model whose samples spread like the data, -> 0 under mode collapse (identical samples give 0).
    The average distance between random pairs of samples is the diversity score of Zhu et al. 2017 ("Toward
    Multimodal Image-to-Image Translation", LPIPS distance) and Mao et al. 2019 ("Mode Seeking GANs"); here in
    pixel space on flattened images, and divided by the real images' score so that the scale of the data cancels.
    samples, reference: (N, ...) and (M, ...) images on one scale (e.g. [0, 1]), N, M >= 2, same image shape.
    pairs: random pairs per set (seeded: the same seed and sizes give the same value); None, or at least as many
    as there are pairs: all pairs, exactly.
    """
    if pairs is not None and pairs < 1:
        raise ValueError(f"pairs must be >= 1 or None, got {pairs}")
    if samples.shape[0] < 2 or reference.shape[0] < 2 or samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"need >= 2 samples and >= 2 references of one shape, got {samples.shape}, {reference.shape}")
    generator = torch.Generator().manual_seed(seed)
    fake = _mean_pairwise_distance(samples.flatten(1), pairs, generator)
    real = _mean_pairwise_distance(reference.flatten(1), pairs, generator)
    if real == 0.0:
        raise ValueError("reference images are all identical: their mean pairwise distance is 0")
    return fake / real


def _class_counts(probs: torch.Tensor) -> torch.Tensor:
    if probs.dim() != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty (N, C) tensor, got {tuple(probs.shape)}")
    return torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1])


def class_coverage(probs: torch.Tensor, min_share: float = 0.2) -> float:
    """Share of the C classes whose predicted count among the N samples is >= min_share * N / C.

    A class is covered when a classifier assigns it at least `min_share` (20%) of its fair share N / C of the
    samples. Counting the modes a classifier finds among generated samples is the mode-coverage measure of Metz
    et al. 2017 ("Unrolled GANs", stacked MNIST) and Srivastava et al. 2017 (VEEGAN); the fair-share threshold
    (instead of "at least one sample") makes it robust to a few stray samples. 1 = every class covered.
    probs: (N, C) class probabilities (or logits: only the argmax is used) of a classifier on the samples.
    """
    counts = _class_counts(probs)
    n, c = probs.shape
    return float((counts >= min_share * n / c).double().mean())


def class_entropy(probs: torch.Tensor) -> float:
    """Normalised entropy H(p) / log C of the predicted class histogram p of the samples: 1 = uniform over the
    C classes, 0 = every sample in one class. It is the marginal-entropy term of the Inception Score (Salimans et
    al. 2016, "Improved Techniques for Training GANs", sec. 4), normalised. probs: (N, C), C >= 2, as for
    class_coverage."""
    counts = _class_counts(probs).double()
    if counts.numel() < 2:
        raise ValueError("class_entropy needs C >= 2 classes")
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy / math.log(counts.numel()))


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[float, float]:
    """(share of real logits > 0, share of fake logits < 0): D's accuracy on real and on fake images.

    The share of positive logits on real images is the overfitting heuristic of Karras et al. 2020 ("Training
    Generative Adversarial Networks with Limited Data", sec. 3: r_t = E[sign(D_train)], here (1 + r_t) / 2).
    Both near 1 means D separates real from fake almost perfectly and G's gradients fade. 0 is the decision
    boundary of both the non-saturating and the hinge loss (models/gan.py); a logit of exactly 0 counts as wrong.
    """
    if real_logits.numel() == 0 or fake_logits.numel() == 0:
        raise ValueError("discriminator_accuracy needs at least one real and one fake logit")
    return float((real_logits > 0).double().mean()), float((fake_logits < 0).double().mean())


def _finite(metrics: dict[str, float], key: str) -> float | None:
    """metrics[key] as a float, or None when absent or not finite (a NaN cannot be judged)."""
    if key not in metrics:
        return None
    value = float(metrics[key])
    return value if math.isfinite(value) else None


class HealthMonitor:
    """Turns a stream of metric dicts into health flags and one-line warnings (onset and recovery, once each).

    Reads these keys (absent or non-finite = cannot judge: no flag, no warning):
      d_real_acc, d_fake_acc        -> health/d_overpowering: the means of each over the last `window` updates that
                                       carry it are both >= d_acc_max (judged once `window` such updates were seen)
      sample_diversity, class_coverage -> health/mode_collapse: the latest value of either is below
                                       min_diversity / min_coverage
      val_active_units, val_kl_max_dim -> health/posterior_collapse: val_active_units == 0, or (with latent_dim)
                                       val_active_units / latent_dim < min_active_share, or val_kl_max_dim <
                                       min_kl_max_dim (latest values)
    Values are remembered across updates, so once a condition can be judged its flag is in every later update's
    flags (1.0 while the condition holds, else 0.0).

    Sources of the conditions (the cut-offs are this module's, see the constants above): a near-perfect D gives G
    vanishing gradients (Arjovsky & Bottou 2017, "Towards Principled Methods for Training GANs") and
    signals D overfitting (Karras et al. 2020, sec. 3); mode collapse as lost sample diversity and missing modes
    (Salimans et al. 2016, sec. 3.2; Metz et al. 2017); posterior collapse as KL -> 0 and inactive units (Bowman et
    al. 2016; Burda et al. 2016, sec. 5.2).
    """

    def __init__(
        self,
        latent_dim: int | None = None,
        window: int = WINDOW,
        d_acc_max: float = D_ACC_MAX,
        min_diversity: float = MIN_DIVERSITY,
        min_coverage: float = MIN_COVERAGE,
        min_active_share: float = MIN_ACTIVE_SHARE,
        min_kl_max_dim: float = MIN_KL_MAX_DIM,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.latent_dim, self.window, self.d_acc_max = latent_dim, window, d_acc_max
        self.min_diversity, self.min_coverage = min_diversity, min_coverage
        self.min_active_share, self.min_kl_max_dim = min_active_share, min_kl_max_dim
        self._acc = {"d_real_acc": deque(maxlen=window), "d_fake_acc": deque(maxlen=window)}
        self._latest: dict[str, float] = {}
        self._state: dict[str, bool] = {}  # condition -> currently flagged

    def update(self, metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
        """Feed one tick's (or epoch's) metrics; returns ({"health/<condition>": 0.0 | 1.0}, warning lines)."""
        for key, values in self._acc.items():
            value = _finite(metrics, key)
            if value is not None:
                values.append(value)
        for key in ("sample_diversity", "class_coverage", "val_active_units", "val_kl_max_dim"):
            value = _finite(metrics, key)
            if value is not None:
                self._latest[key] = value
        flags: dict[str, float] = {}
        lines: list[str] = []
        for name, judge in (
            ("d_overpowering", self._d_overpowering),
            ("mode_collapse", self._mode_collapse),
            ("posterior_collapse", self._posterior_collapse),
        ):
            verdict = judge()
            if verdict is None:
                continue
            flagged, onset, recovered = verdict
            flags[f"health/{name}"] = float(flagged)
            was = self._state.get(name, False)
            if flagged and not was:
                lines.append(onset)
            elif was and not flagged:
                lines.append(recovered)
            self._state[name] = flagged
        return flags, lines

    def _d_overpowering(self) -> tuple[bool, str, str] | None:
        real, fake = self._acc["d_real_acc"], self._acc["d_fake_acc"]
        if len(real) < self.window or len(fake) < self.window:
            return None
        mean_real, mean_fake = sum(real) / len(real), sum(fake) / len(fake)
        seen = f"(d_real_acc={mean_real:.3f}, d_fake_acc={mean_fake:.3f})"
        rule = f"D accuracy >= {self.d_acc_max:g} on real and fake for the last {self.window} ticks"
        return (
            mean_real >= self.d_acc_max and mean_fake >= self.d_acc_max,
            f"WARNING: discriminator overpowering: {rule} {seen}; try a lower train.lr_d, model.r1_gamma > 0 "
            "or model.diffaugment",
            f"RECOVERED: discriminator no longer overpowering: mean D accuracy over the last {self.window} ticks "
            f"below {self.d_acc_max:g} on real or fake {seen}",
        )

    def _mode_collapse(self) -> tuple[bool, str, str] | None:
        checks = [
            (key, self._latest[key], floor)
            for key, floor in (("sample_diversity", self.min_diversity), ("class_coverage", self.min_coverage))
            if key in self._latest
        ]
        if not checks:
            return None
        failing = [f"{key}={value:.3f} < {floor:g}" for key, value, floor in checks if value < floor]
        seen = ", ".join(f"{key}={value:.3f}" for key, value, _ in checks)
        return (
            bool(failing),
            f"WARNING: mode collapse: {', '.join(failing)}; try model.diffaugment, model.r1_gamma > 0, "
            "model.spectral_norm or a lower train.lr, or resume from an earlier checkpoint",
            f"RECOVERED: mode collapse over: {seen}",
        )

    def _posterior_collapse(self) -> tuple[bool, str, str] | None:
        units, kl_max = self._latest.get("val_active_units"), self._latest.get("val_kl_max_dim")
        if units is None and kl_max is None:
            return None
        failing, seen = [], []
        if units is not None:
            of = f"/{self.latent_dim}" if self.latent_dim else ""
            seen.append(f"val_active_units={units:g}{of}")
            share_low = bool(self.latent_dim) and units / self.latent_dim < self.min_active_share
            if units == 0 or share_low:
                failing.append(seen[-1] + (f" (< {self.min_active_share:.0%})" if share_low and units else ""))
        if kl_max is not None:
            seen.append(f"val_kl_max_dim={kl_max:.4f}")
            if kl_max < self.min_kl_max_dim:
                failing.append(f"{seen[-1]} < {self.min_kl_max_dim:g} nats")
        return (
            bool(failing),
            f"WARNING: posterior collapse: {', '.join(failing)}; the decoder ignores z: try a lower model.beta "
            "or a smaller model.width (a weaker decoder)",
            f"RECOVERED: posterior collapse over: {', '.join(seen)}",
        )
