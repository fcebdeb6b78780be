"""The cluster deployment (k8s/) and the image it runs (Dockerfile), checked without a cluster.

Every kustomization is rendered with `kubectl kustomize`; built-in kinds are validated against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors) and RayCluster/RayJob against the
KubeRay CRDs in ../shared/crds (closed the way `kubectl apply`'s strict field validation closes them). Then the
rules the README promises: every pod under the restricted Pod Security profile, requests and limits on every
container (init containers, the autoscaler sidecar and job submitters included), Secrets holding placeholders
only, Ray token auth everywhere, shared storage as train.storage_path, RBAC limited to RayJobs, and network
policies that let only Ray and the ingress controller reach MLflow and only MLflow reach PostgreSQL.
The checkers are plain functions that return a list of problems; the negative tests feed them bad input.
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).parents[1]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["base"] + sorted(
    f"overlays/{p.name}" for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file()
)
CRD_DIR = Path(os.environ.get("GENFORGE_CRD_DIR", ROOT.parent / "shared" / "crds"))
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
K8S_VERSION = "1.32.0"  # the kubectl in the machine image; kubernetes-validate ships schemas up to 1.37
NAMESPACE = "genforge"
SHARED_MOUNT = "/mnt/genforge"
PLACEHOLDER = re.compile(r"^CHANGE-ME-[A-Za-z0-9-]+$")
SECRET_ENV = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


# ----------------------------------------------------------------------------------------------- rendering


@functools.cache
def render(kustomization: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the manifests")
    out = subprocess.run([kubectl, "kustomize", str(K8S / kustomization)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize k8s/{kustomization} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) below node, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def pod_specs(doc: Doc) -> list[tuple[str, Doc]]:
    """Every pod spec in a document, wherever a kind nests it: any mapping with a `containers` list."""
    return [(p, v) for p, v in walk(doc) if isinstance(v, dict) and isinstance(v.get("containers"), list)]


def ray_cluster_specs(docs: tuple[Doc, ...]) -> list[tuple[str, Doc]]:
    """The RayCluster specs: standalone clusters' and those RayJobs bring along."""
    specs = [(f"RayCluster/{d['metadata']['name']}", d["spec"]) for d in of_kind(docs, "RayCluster")]
    specs += [(f"RayJob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"])
              for d in of_kind(docs, "RayJob") if "rayClusterSpec" in d["spec"]]
    return specs


def ray_groups(cluster: Doc) -> list[tuple[str, Doc]]:
    """(group name, group spec) for the head ("head") and every worker group."""
    return [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) matches these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


# ------------------------------------------------------------------------------------------------ checkers

_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a resource quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def resources_problems(resources: Doc | None) -> list[str]:
    problems = []
    resources = resources or {}
    for part in ("requests", "limits"):
        missing = [r for r in ("cpu", "memory") if r not in (resources.get(part) or {})]
        if missing:
            problems.append(f"resources.{part} lacks {', '.join(missing)}")
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for name in set(requests) & set(limits):
        if quantity(requests[name]) > quantity(limits[name]):
            problems.append(f"resources.requests.{name} {requests[name]} exceeds the limit {limits[name]}")
    return problems


def container_problems(container: Doc, pod_security: Doc | None = None, image_required: bool = True) -> list[str]:
    """What keeps a container from the restricted Pod Security profile or lacks requests and limits.

    Fields the profile allows at pod level (runAsNonRoot, seccompProfile) count from pod_security too; the rest
    must be on the container, as the manifests here set them everywhere.
    """
    sc, pod = container.get("securityContext") or {}, pod_security or {}
    problems = []
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext.allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append("securityContext.capabilities.drop lacks ALL")
    if (sc.get("capabilities") or {}).get("add"):
        problems.append("securityContext.capabilities.add is not empty")
    if sc.get("privileged"):
        problems.append("securityContext.privileged is true")
    if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot is not true")
    if sc.get("runAsUser", pod.get("runAsUser")) == 0:
        problems.append("runAsUser is 0")
    seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"seccompProfile.type is {seccomp!r}, not RuntimeDefault")
    problems += resources_problems(container.get("resources"))
    image = container.get("image")
    if image_required and not image:
        problems.append("no image")
    elif image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        problems.append(f"image {image!r} has no pinned tag")
    name = container.get("name", "<autoscaler>")
    return [f"{name}: {p}" for p in problems]


def pod_problems(pod: Doc) -> list[str]:
    """A pod spec's own restricted-profile fields, then every container and init container in it."""
    pod_sc = pod.get("securityContext") or {}
    problems = [f"pod: {field} is true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]
    problems += [f"pod: volume {v['name']} is a hostPath" for v in pod.get("volumes", []) if "hostPath" in v]
    if pod_sc.get("runAsNonRoot") is not True:
        problems.append("pod: securityContext.runAsNonRoot is not true")
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod: securityContext.seccompProfile is not RuntimeDefault")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        problems += container_problems(container, pod_sc)
    return problems


def secret_problems(secret: Doc) -> list[str]:
    """Anything in a Secret that is not a marked placeholder."""
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    name = secret["metadata"]["name"]
    return [f"Secret {name} key {k}: not a CHANGE-ME-... placeholder" for k, v in values.items()
            if not PLACEHOLDER.match(v)]


def plaintext_credential_problems(doc: Doc) -> list[str]:
    """Credentials outside Secrets: secret-looking env values set inline, passwords inside URIs."""
    problems = []
    for path, node in walk(doc):
        is_env_var = isinstance(node, dict) and re.search(r"\.env\[\d+\]$", path)
        if is_env_var and "value" in node and SECRET_ENV.search(node["name"]):
            problems.append(f"{path}: {node['name']} is set inline, not from a Secret")
        if isinstance(node, str) and re.search(r"[a-z+]+://[^/@\s:]+:[^/@\s]+@", node):
            problems.append(f"{path}: a URI carries a password")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """The Dockerfile's promises: pinned base images, installs through constraints.txt, a numeric non-root
    USER last, a WORKDIR, and no secret baked in."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    problems = []
    bases = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    if not bases:
        problems.append("no FROM")
    for base in bases:
        tag = base.split("@")[0].rsplit(":", 1)[-1] if ":" in base.split("@")[0] else ""
        if not re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.-]+)?", tag):
            problems.append(f"FROM {base}: not pinned to an exact version tag")
    if not any("pip install" in ln and re.search(r"(-c|--constraint)[ =]constraints\.txt", ln) for ln in lines):
        problems.append("no `pip install -c constraints.txt`")
    users = [ln.split(None, 1)[1] for ln in lines if ln.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]):
        problems.append("the last USER is not a numeric non-root uid")
    if not any(ln.upper().startswith("WORKDIR ") for ln in lines):
        problems.append("no WORKDIR")
    if any(re.match(r"(ENV|ARG)\s.*(PASSWORD|TOKEN|SECRET)", ln, re.I) for ln in lines):
        problems.append("a secret in ENV/ARG")
    return problems


@functools.cache
def crd_validators() -> dict[str, Any]:
    jsonschema = pytest.importorskip("jsonschema")
    if not all((CRD_DIR / f).is_file() for f in CRD_FILES.values()):
        pytest.skip(f"KubeRay CRD schemas not found in {CRD_DIR} (set GENFORGE_CRD_DIR to validate RayCluster/RayJob)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    validators = {}
    for kind, filename in CRD_FILES.items():
        crd = yaml.load((CRD_DIR / filename).read_text(), Loader=loader)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        validators[kind] = jsonschema.Draft202012Validator(closed(version["schema"]["openAPIV3Schema"]))
    return validators


def closed(schema: Any) -> Any:
    """A structural schema with unknown fields rejected (the API server's strict field validation) instead of
    silently pruned: every object with `properties` and no `additionalProperties` gets additionalProperties
    false."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: ({p: closed(s) for p, s in v.items()} if k == "properties" else closed(v)) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_errors(doc: Doc) -> list[str]:
    errors = sorted(crd_validators()[doc["kind"]].iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors]


# -------------------------------------------------------------------------------------- schema validation


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_builtin_kinds_validate_against_the_kubernetes_schema(kustomization):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra) is not installed")
    docs = render(kustomization)
    builtin = [d for d in docs if not d["apiVersion"].startswith("ray.io/")]
    assert {d["kind"] for d in builtin} >= {"Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim",
                                            "Deployment", "StatefulSet", "Service", "Role", "RoleBinding",
                                            "Ingress", "NetworkPolicy"}
    for doc in builtin:
        kv.validate(doc, K8S_VERSION, strict=True)  # raises with the offending path
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    broken = copy.deepcopy(named(docs, "Deployment", "genforge-mlflow"))
    broken["spec"]["replica"] = 1  # a typo strict validation must catch
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_resources_validate_against_the_kuberay_crds(kustomization):
    docs = render(kustomization)
    ray_docs = of_kind(docs, "RayCluster") + of_kind(docs, "RayJob")
    assert len(of_kind(docs, "RayCluster")) == 1 and len(of_kind(docs, "RayJob")) == 2
    for doc in ray_docs:
        assert crd_errors(doc) == [], f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace") == NAMESPACE


def test_crd_validation_rejects_unknown_and_mistyped_fields():
    cluster = copy.deepcopy(of_kind(render("base"), "RayCluster")[0])
    cluster["spec"]["workerGroupSpec"] = cluster["spec"].pop("workerGroupSpecs")  # a typo
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [4]
    errors = crd_errors(cluster)
    assert any("workerGroupSpec" in e for e in errors), errors
    assert any(e.startswith("spec.headGroupSpec.template.spec.containers.0.resources.limits.cpu") for e in errors)


# ------------------------------------------------------------------------------------ pods and containers


def test_every_pod_template_is_found():
    """The generic pod walker sees every place a kind nests pods: a guard for the security test below."""
    docs = render("base")
    found = {(d["kind"], path) for d in docs for path, _ in pod_specs(d)}
    expected = {("Deployment", "spec.template.spec"), ("StatefulSet", "spec.template.spec"),
                ("RayCluster", "spec.headGroupSpec.template.spec"),
                ("RayCluster", "spec.workerGroupSpecs[0].template.spec"),
                ("RayCluster", "spec.workerGroupSpecs[1].template.spec"),
                ("RayJob", "spec.submitterPodTemplate.spec"),
                ("RayJob", "spec.rayClusterSpec.headGroupSpec.template.spec"),
                ("RayJob", "spec.rayClusterSpec.workerGroupSpecs[0].template.spec")}
    assert expected <= found
    assert all(pod_specs(job) and "submitterPodTemplate" in job["spec"] for job in of_kind(docs, "RayJob"))
    assert any(pod.get("initContainers") for d in docs for _, pod in pod_specs(d))


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_is_restricted_and_has_requests_and_limits(kustomization):
    docs = render(kustomization)
    problems = [f"{d['kind']}/{d['metadata']['name']} {path}: {p}"
                for d in docs for path, pod in pod_specs(d) for p in pod_problems(pod)]
    for where, cluster in ray_cluster_specs(docs):
        if cluster.get("enableInTreeAutoscaling"):
            autoscaler = cluster.get("autoscalerOptions")
            assert autoscaler, f"{where}: autoscaling without autoscalerOptions (KubeRay's defaults are not restricted)"
            problems += [f"{where} autoscalerOptions: {p}"
                         for p in container_problems(autoscaler, image_required=False)]
    assert problems == []
    (namespace,) = of_kind(docs, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


GOOD_CONTAINER = {
    "name": "c", "image": "registry.example.com/genforge:0.1.0",
    "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
}


def _set(path: str, value: Any) -> Doc:
    """GOOD_CONTAINER with one dotted path set (value None deletes it)."""
    container = copy.deepcopy(GOOD_CONTAINER)
    *parents, leaf = path.split(".")
    node = container
    for key in parents:
        node = node[key]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return container


@pytest.mark.parametrize("path, value, expected", [
    ("securityContext.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
    ("securityContext.allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
    ("securityContext.capabilities.drop", ["NET_RAW"], "drop lacks ALL"),
    ("securityContext.capabilities.add", ["SYS_ADMIN"], "capabilities.add"),
    ("securityContext.privileged", True, "privileged"),
    ("securityContext.runAsNonRoot", False, "runAsNonRoot"),
    ("securityContext.runAsUser", 0, "runAsUser is 0"),
    ("securityContext.seccompProfile", {"type": "Unconfined"}, "seccompProfile"),
    ("resources.limits", None, "resources.limits lacks cpu, memory"),
    ("resources.requests.memory", None, "resources.requests lacks memory"),
    ("resources.requests.cpu", "2", "exceeds the limit"),
    ("image", "genforge", "no pinned tag"),
    ("image", "postgres:latest", "no pinned tag"),
    ("securityContext", None, "allowPrivilegeEscalation"),
])
def test_container_checker_rejects_a_bad_container(path, value, expected):
    assert container_problems(GOOD_CONTAINER) == []
    problems = container_problems(_set(path, value))
    assert any(expected in p for p in problems), problems


def test_pod_checker_rejects_host_access_and_takes_pod_level_fields():
    good = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [_set("securityContext.runAsNonRoot", None)],
            "initContainers": [_set("securityContext.seccompProfile", None)]}
    assert pod_problems(good) == []  # both fields may come from the pod
    bad = copy.deepcopy(good)
    bad.update(hostNetwork=True, volumes=[{"name": "root", "hostPath": {"path": "/"}}])
    bad["initContainers"][0]["resources"] = {}
    del bad["securityContext"]["runAsNonRoot"]
    problems = pod_problems(bad)
    for expected in ("hostNetwork", "hostPath", "pod: securityContext.runAsNonRoot", "c: runAsNonRoot is not true",
                     "c: resources.requests lacks cpu, memory"):
        assert any(expected in p for p in problems), (expected, problems)
    assert quantity("500m") == 0.5 and quantity("2Gi") == 2 * 2**30
    with pytest.raises(ValueError):
        quantity("2 GB")


# ------------------------------------------------------------------------------------------------ secrets


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_credentials_live_only_in_secrets_and_only_as_placeholders(kustomization):
    docs = render(kustomization)
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    assert secrets, "no Secret rendered"
    assert [p for s in secrets.values() for p in secret_problems(s)] == []
    assert [p for d in docs if d["kind"] != "Secret" for p in plaintext_credential_problems(d)] == []
    keys = {name: set(s.get("data", {})) | set(s.get("stringData", {})) for name, s in secrets.items()}
    refs = [(p, v) for d in docs for p, v in walk(d) if p.endswith("secretKeyRef")]
    assert refs
    for path, ref in refs:  # every reference resolves: a typo would leave a pod stuck in CreateContainerConfigError
        assert ref["key"] in keys.get(ref["name"], set()), f"{path}: {ref} names no rendered Secret key"


def test_secret_checkers_reject_real_looking_values():
    real = {"metadata": {"name": "s"}, "data": {"password": base64.b64encode(b"hunter2hunter2").decode()},
            "stringData": {"token": "CHANGE-ME-ok", "other": "change-me"}}
    assert [p.split(" key ")[1].split(":")[0] for p in secret_problems(real)] == ["password", "other"]
    pod = {"containers": [{"name": "c", "env": [{"name": "DB_PASSWORD", "value": "x"},
                                                {"name": "URI", "value": "postgresql://u:pw@db/x"},
                                                {"name": "OK_PASSWORD", "valueFrom": {"secretKeyRef": {}}}]}]}
    problems = plaintext_credential_problems(pod)
    assert len(problems) == 2 and "DB_PASSWORD" in problems[0] and "URI carries a password" in problems[1]


# -------------------------------------------------------------------------------------------------- Ray


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_token_auth_and_shared_storage_on_every_ray_pod(kustomization):
    docs = render(kustomization)
    claims = {c["metadata"]["name"]: c for c in of_kind(docs, "PersistentVolumeClaim")}
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    clusters = ray_cluster_specs(docs)
    assert len(clusters) == 2
    for where, cluster in clusters:
        auth = cluster.get("authOptions", {})
        assert auth.get("mode") == "token", where
        assert "auth_token" in secrets[auth["secretName"]]["data"], where
        assert tuple(map(int, cluster["rayVersion"].split("."))) >= (2, 52), "token auth needs Ray >= 2.52"
        for group, spec in ray_groups(cluster):
            pod = spec["template"]["spec"]
            ray_container = pod["containers"][0]
            _assert_token_env(ray_container, auth["secretName"], f"{where} {group}")
            mounts = {m["mountPath"]: m["name"] for m in ray_container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            claim = volumes[mounts[SHARED_MOUNT]]["persistentVolumeClaim"]["claimName"]
            assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{where} {group}: {claim}"
            env = env_of(ray_container)
            assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://genforge-mlflow")
            assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
    for job in of_kind(docs, "RayJob"):
        secret = ray_auth_secret_for(docs, job)
        _assert_token_env(job["spec"]["submitterPodTemplate"]["spec"]["containers"][0], secret,
                          f"RayJob/{job['metadata']['name']} submitter")


def _assert_token_env(container: Doc, secret: str, where: str) -> None:
    env = env_of(container)
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    assert ref == {"name": secret, "key": "auth_token"}, where


def ray_auth_secret_for(docs: tuple[Doc, ...], job: Doc) -> str:
    """The token Secret of the cluster a RayJob runs on: its own, or the one its clusterSelector picks."""
    if "rayClusterSpec" in job["spec"]:
        return job["spec"]["rayClusterSpec"]["authOptions"]["secretName"]
    cluster = named(docs, "RayCluster", job["spec"]["clusterSelector"]["ray.io/cluster"])
    return cluster["spec"]["authOptions"]["secretName"]


def job_spec(job: Doc) -> Any:
    """The genforge spec a RayJob's entrypoint runs, loaded with its --set overrides as genforge would."""
    from genforge.config import load_spec

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] in (["genforge", "run"], ["genforge", "tune"], ["genforge", "train"]), argv
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    assert (ROOT / argv[2]).is_file(), f"{argv[2]} is not a shipped spec"
    return load_spec(ROOT / argv[2], overrides)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rayjobs_one_on_the_shared_cluster_one_with_its_own(kustomization):
    docs = render(kustomization)
    jobs = {j["metadata"]["name"]: j["spec"] for j in of_kind(docs, "RayJob")}
    selecting = [n for n, s in jobs.items() if "clusterSelector" in s]
    owning = [n for n, s in jobs.items() if "rayClusterSpec" in s]
    assert len(selecting) == 1 and len(owning) == 1, jobs.keys()
    named(docs, "RayCluster", jobs[selecting[0]]["clusterSelector"]["ray.io/cluster"])
    for name, spec in jobs.items():
        assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0, name
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert spec["submissionMode"] == "K8sJobMode" and spec["submitterPodTemplate"], name
        assert job_spec(named(docs, "RayJob", name)).train.storage_path.startswith(f"{SHARED_MOUNT}/"), name
    (cluster,) = of_kind(docs, "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    groups = dict(ray_groups(cluster["spec"]))
    gpu = [g for n, g in groups.items() if GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    cpu = [g for n, g in groups.items() if n != "head" and g not in gpu]
    assert len(gpu) == 1 and gpu[0]["minReplicas"] == 0 and cpu, groups.keys()
    for _, cluster_spec in ray_cluster_specs(docs):  # genforge's sweeps hold `trial_driver`, a head resource
        assert float(cluster_spec["headGroupSpec"]["resources"]["trial_driver"]) >= 1


def test_the_gpu_overlay_trains_on_gpus_and_dev_does_not():
    gpu_docs, dev_docs, base_docs = render("overlays/gpu"), render("overlays/dev"), render("base")
    (cluster,) = of_kind(gpu_docs, "RayCluster")
    (gpu_group,) = [g for g in cluster["spec"]["workerGroupSpecs"]
                    if GPU in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    gpus_per_node = int(gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"][GPU])
    gpu_jobs = [job_spec(j) for j in of_kind(gpu_docs, "RayJob") if job_spec(j).train.use_gpu]
    assert gpu_jobs, "no RayJob in the gpu overlay sets train.use_gpu"
    for spec in gpu_jobs:  # genforge refuses to start when the cluster has fewer GPUs than train.workers
        assert gpu_group["replicas"] * gpus_per_node >= spec.train.workers
    assert gpu_group["minReplicas"] == 0 and gpu_group["maxReplicas"] >= gpu_group["replicas"]
    assert not any(job_spec(j).train.use_gpu for j in of_kind(dev_docs, "RayJob"))
    assert not any(job_spec(j).train.use_gpu for j in of_kind(base_docs, "RayJob"))

    def cpu_requested(docs: tuple[Doc, ...]) -> float:
        return sum(quantity(c.get("resources", {}).get("requests", {}).get("cpu", 0))
                   for d in docs for _, pod in pod_specs(d) for c in pod["containers"])

    assert cpu_requested(dev_docs) < cpu_requested(base_docs)


# ------------------------------------------------------------------------------- MLflow, access, network


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_mlflow_server_runs_on_postgres_with_basic_auth(kustomization):
    docs = render(kustomization)
    deployment = named(docs, "Deployment", "genforge-mlflow")
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["command"] == ["mlflow", "server"] and "--app-name=basic-auth" in server["args"]
    configmaps = {c["metadata"]["name"]: c["data"] for c in of_kind(docs, "ConfigMap")}
    env = {k: v for ref in server.get("envFrom", []) for k, v in configmaps[ref["configMapRef"]["name"]].items()}
    env.update({e["name"]: e for e in server["env"]})
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    for name in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    (destination,) = [a.split("=", 1)[1] for a in server["args"] if a.startswith("--artifacts-destination=")]
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[destination]]
    named(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    postgres = named(docs, "StatefulSet", "genforge-postgres")
    assert postgres["spec"]["volumeClaimTemplates"], "PostgreSQL keeps its data on a claim of its own"
    service = named(docs, "Service", "genforge-mlflow")
    assert selects({"matchLabels": service["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rbac_allows_rayjobs_and_nothing_else(kustomization):
    docs = render(kustomization)
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    (role,) = of_kind(docs, "Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs", "rayjobs/status"],
                              "verbs": ["get", "list", "watch", "create", "delete"]}]
    (binding,) = of_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_network_policies_guard_mlflow_and_postgres(kustomization):
    docs = render(kustomization)
    mlflow_labels = named(docs, "Deployment", "genforge-mlflow")["spec"]["template"]["metadata"]["labels"]
    postgres_labels = named(docs, "StatefulSet", "genforge-postgres")["spec"]["template"]["metadata"]["labels"]
    policies = of_kind(docs, "NetworkPolicy")
    (to_mlflow,) = [p["spec"] for p in policies if selects(p["spec"]["podSelector"], mlflow_labels)]
    (to_postgres,) = [p["spec"] for p in policies if selects(p["spec"]["podSelector"], postgres_labels)]
    for spec in (to_mlflow, to_postgres):
        assert spec["policyTypes"] == ["Ingress"] and len(spec["ingress"]) == 1
    peers = to_mlflow["ingress"][0]["from"]
    ray_peers = [p for p in peers if "namespaceSelector" not in p]
    assert len(peers) == 3 and len(ray_peers) == 1
    for node_type in ("head", "worker"):
        assert selects(ray_peers[0]["podSelector"], {"ray.io/node-type": node_type})
    assert not selects(ray_peers[0]["podSelector"], postgres_labels)
    assert not selects(ray_peers[0]["podSelector"], {"app.kubernetes.io/name": "genforge-submitter"})
    outside = [p for p in peers if "namespaceSelector" in p]  # the ingress controller, Kubeflow's component pods
    assert len(outside) == 2
    for peer in outside:  # a namespace AND a pod label: never a whole namespace
        assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
    assert to_mlflow["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5000}]
    assert to_postgres["ingress"][0] == {"from": [{"podSelector": {"matchLabels": mlflow_labels}}],
                                         "ports": [{"protocol": "TCP", "port": 5432}]}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ingress_serves_the_ray_jobs_api_and_mlflow_over_tls(kustomization):
    docs = render(kustomization)
    (ingress,) = of_kind(docs, "Ingress")
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert all(t.get("secretName") for t in ingress["spec"]["tls"])
    backends = set()
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in tls_hosts, f"{rule['host']} is served without TLS"
        backends |= {(p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
                     for p in rule["http"]["paths"]}
    (cluster,) = of_kind(docs, "RayCluster")
    head_service = f"{cluster['metadata']['name']}-head-svc"  # the Service KubeRay creates for the head
    assert (head_service, 8265) in backends
    mlflow = named(docs, "Service", "genforge-mlflow")
    assert ("genforge-mlflow", mlflow["spec"]["ports"][0]["port"]) in backends
    allowed_hosts = {c["data"].get("MLFLOW_SERVER_ALLOWED_HOSTS") for c in of_kind(docs, "ConfigMap")} - {None}
    mlflow_host = next(r["host"] for r in ingress["spec"]["rules"]
                       if r["http"]["paths"][0]["backend"]["service"]["name"] == "genforge-mlflow")
    assert any(mlflow_host in hosts.split(",") for hosts in allowed_hosts), "MLflow would refuse the Ingress host"


# ------------------------------------------------------------------------------------------------ image


def test_dockerfile_pins_its_base_installs_with_constraints_and_runs_as_non_root():
    assert dockerfile_problems((ROOT / "Dockerfile").read_text()) == []
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "mlflow.db", "genforge_runs", "**/__pycache__", ".pytest_cache"} <= ignored
    for doc in render("base"):  # the manifests run the image the Dockerfile builds
        for _, pod in pod_specs(doc):
            for container in pod["containers"]:
                assert container["image"].startswith(("registry.example.com/genforge:", "postgres:")), container


@pytest.mark.parametrize("text, expected", [
    ("FROM python:3.11-slim\nRUN pip install -c constraints.txt .\nWORKDIR /app\nUSER 1000", "not pinned"),
    ("FROM python:latest\nRUN pip install -c constraints.txt .\nWORKDIR /app\nUSER 1000", "not pinned"),
    ("FROM python:3.11.14-slim\nRUN pip install .\nWORKDIR /app\nUSER 1000", "constraints.txt"),
    ("FROM python:3.11.14-slim\nRUN pip install -c constraints.txt .\nWORKDIR /app\nUSER app", "non-root"),
    ("FROM python:3.11.14-slim\nRUN pip install -c constraints.txt .\nWORKDIR /app\nUSER 0", "non-root"),
    ("FROM python:3.11.14-slim\nRUN pip install -c constraints.txt .\nWORKDIR /app", "non-root"),
    ("FROM python:3.11.14-slim\nRUN pip install -c constraints.txt .\nUSER 1000", "WORKDIR"),
    ("FROM python:3.11.14-slim\nENV DB_PASSWORD=x\nRUN pip install -c constraints.txt .\nWORKDIR /a\nUSER 1000",
     "secret"),
])
def test_dockerfile_checker_rejects_a_bad_dockerfile(text, expected):
    assert dockerfile_problems(
        "FROM python:3.11.14-slim-bookworm@sha256:abc\nRUN pip install -c constraints.txt .\nWORKDIR /a\nUSER 1000:1000"
    ) == []
    problems = dockerfile_problems(text)
    assert any(expected in p for p in problems), problems
