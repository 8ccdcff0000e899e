"""Static checks of everything under ``cluster/`` (fast: no network, no Docker, no cloud).

- ``cluster/aws.yaml`` and ``cluster/gcp.yaml`` validate against the autoscaler schema that
  ships inside the installed ``ray`` package, and survive Ray's own config preparation;
  they have a CPU-only head and autoscaled GPU worker types.
- The KubeRay manifests have the right apiVersion/kind, a head group with ``/data`` on a
  claim, a GPU worker group (``nvidia.com/gpu``), autoscaling, and a RayJob whose entrypoint
  is ``archsearch search --ray ...``; the RayJob's cluster equals ``raycluster.yaml``'s.
- The Dockerfile has a CUDA base image, installs the project, runs as a non-root user and
  declares no secrets; its Ray version matches the manifests' ``rayVersion``.
- Every ``archsearch ...`` command quoted in the README, the YAMLs and the Dockerfile uses a
  real subcommand (and, for the commands whose flags are specified, only those flags).
- ``cluster/fetch_ptb.py`` and ``cluster/submit_search.py`` work (with a local archive).
"""

from __future__ import annotations

import copy
import importlib.resources
import io
import json
import re
import runpy
import shlex
import sys
import tarfile
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
RAY_UP_CONFIGS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
DOCKERIGNORE = CLUSTER / "Dockerfile.dockerignore"
README = CLUSTER / "README.md"

SUBCOMMANDS = {"search", "leaderboard", "report", "export", "show", "train", "baselines", "cells", "mutate"}
GLOBAL_OPTIONS = {"-v", "--verbose", "-q", "--quiet", "--debug", "--log-file", "-h", "--help"}
GLOBAL_OPTIONS_WITH_VALUE = {"--log-file"}
# Flags of the subcommands whose interface is fixed by the design; other subcommands are
# only checked for their name. (--data-dir is how the PTB location reaches the search.)
KNOWN_FLAGS = {
    "search": {
        "--db", "--preset", "--tasks", "--workers", "--max-evaluations", "--time-limit", "--device",
        "--ray", "--ray-address", "--gpus-per-eval", "--cpus-per-eval", "--data-dir",
    },
    "leaderboard": {"--db", "--top", "--format"},
    "report": {"--db", "-o", "--force"},
    "export": {"-o", "--weights", "--force"},
}
CHOICES = {"--preset": {"quick", "medium", "small", "paper"}, "--device": {"cpu", "cuda"}, "--format": {"table", "json", "csv"}}
GPU_INSTANCE_PREFIXES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p5.")


# --------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def load_all(path: Path) -> list[dict]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def ray_schema() -> dict:
    """The autoscaler schema shipped inside the installed ray package."""
    pytest.importorskip("ray")
    resource = importlib.resources.files("ray.autoscaler").joinpath("ray-schema.json")
    return json.loads(resource.read_text())


def strings_in(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings_in(value)]
    return []


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued instruction"
    result = []
    for line in logical:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def dockerfile_arg_defaults() -> dict[str, str]:
    defaults = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def pod_specs(cluster_spec: dict) -> list[tuple[str, dict]]:
    pods = [("head", cluster_spec["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster_spec.get("workerGroupSpecs", [])]
    return pods


def mounts(container: dict) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


# --------------------------------------------------------------------------- ray up configs


@pytest.fixture(scope="module")
def schema():
    return ray_schema()


@pytest.mark.parametrize("name", sorted(RAY_UP_CONFIGS))
def test_ray_up_config_validates_against_rays_schema(name, schema):
    jsonschema = pytest.importorskip("jsonschema")
    config = load_yaml(RAY_UP_CONFIGS[name])
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("name", sorted(RAY_UP_CONFIGS))
def test_ray_up_config_survives_rays_own_preparation(name):
    """What `ray up` does before launching anything: merge defaults, validate docker and node types."""
    pytest.importorskip("jsonschema")
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as e:  # private API: moved in some Ray version
        pytest.skip(f"ray's config preparation is not importable: {e}")
    prepared = prepare_config(copy.deepcopy(load_yaml(RAY_UP_CONFIGS[name])))
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


@pytest.mark.parametrize("name", sorted(RAY_UP_CONFIGS))
def test_ray_up_config_layout(name):
    config = load_yaml(RAY_UP_CONFIGS[name])
    assert config["provider"]["type"] == name
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    # The head runs the driver and the database; no evaluation may be scheduled there.
    assert head["resources"].get("CPU") == 0, "head must advertise 0 CPUs"
    assert not head["resources"].get("GPU"), "head is a CPU node"
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu_workers = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no GPU worker node type"
    for key, node in gpu_workers.items():
        assert node.get("min_workers", 0) == 0, f"{key}: GPU workers should scale from zero"
        assert 1 <= node["max_workers"] <= config["max_workers"], key
        assert node["resources"].get("CPU", 0) >= 1, key
        node_config = node["node_config"]
        if name == "aws":
            assert node_config["InstanceType"].startswith(GPU_INSTANCE_PREFIXES), key
        else:
            machine = node_config["machineType"]
            accelerators = node_config.get("guestAccelerators", [])
            assert accelerators or machine.startswith(("g2-", "a2-", "a3-")), f"{key}: no GPU attached"
            if machine.startswith("n1-"):
                assert accelerators and accelerators[0]["acceleratorCount"] >= 1, key
            # GCP refuses to create GPU VMs that would live-migrate.
            assert node_config["scheduling"]["onHostMaintenance"] == "TERMINATE", key
    assert config["max_workers"] >= 1
    assert config["idle_timeout_minutes"] > 0
    for key, node in gpu_workers.items():
        # A node type's own list replaces the global one; the container only gets the GPU
        # if the driver answers before Docker starts, and /data must exist for the mount.
        init = " ".join(node.get("initialization_commands", config["initialization_commands"]))
        assert "nvidia-smi" in init, f"{key}: does not wait for the NVIDIA driver"
        assert "mkdir -p /data" in init, f"{key}: /data is not created"


@pytest.mark.parametrize("name", sorted(RAY_UP_CONFIGS))
def test_ray_up_config_commands(name):
    config = load_yaml(RAY_UP_CONFIGS[name])
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "ray start --head" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "--address=$RAY_HEAD_IP:6379" in worker_start
    # The project comes from the image built by cluster/Dockerfile.
    assert config["docker"]["image"].split("/")[-1].startswith("archsearch:")
    assert "-v /data:/data" in config["docker"]["run_options"]
    assert any("/data" in c and "mkdir" in c for c in config["initialization_commands"])
    assert any("cluster/fetch_ptb.py /data/ptb" in c for c in config["setup_commands"])


# --------------------------------------------------------------------------- KubeRay


@pytest.fixture(scope="module")
def raycluster_docs():
    return load_all(RAYCLUSTER)


@pytest.fixture(scope="module")
def rayjob_docs():
    return load_all(RAYJOB)


def check_cluster_spec(spec: dict, docs: list[dict]) -> None:
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == dockerfile_arg_defaults()["RAY_VERSION"], "rayVersion must match the image"
    head = spec["headGroupSpec"]
    # KubeRay's rayStartParams is a map of strings: a bare number would be rejected.
    for group in [head, *spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in group.get("rayStartParams", {}).values()), group
    assert head["rayStartParams"].get("num-cpus") == "0", "no evaluations on the head pod"
    head_pod = head["template"]["spec"]
    assert head_pod["containers"], "head group has no container"
    head_container = head_pod["containers"][0]
    claims = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    volumes = {v["name"]: v for v in head_pod["volumes"]}
    data_volume = volumes[mounts(head_container)["/data"]]
    assert data_volume["persistentVolumeClaim"]["claimName"] in claims, "/data on the head is not the claim"

    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if any(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1 for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    for group in gpu_groups:
        assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
        container = group["template"]["spec"]["containers"][0]
        assert "/data" in mounts(container), "workers need /data/ptb at the same path as the head"

    images = set()
    for _, pod in pod_specs(spec):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"] + pod.get("initContainers", []):
            images.add(container["image"])
        fetchers = [c for c in pod.get("initContainers", []) if "fetch_ptb.py" in " ".join(c["command"])]
        assert fetchers and fetchers[0]["command"][-1] == "/data/ptb"
    assert len(images) == 1, f"one image for every container, found {images}"
    assert images.pop().split("/")[-1].startswith("archsearch:")


def test_raycluster_manifest(raycluster_docs):
    cluster = one(raycluster_docs, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    one(raycluster_docs, "PersistentVolumeClaim")
    check_cluster_spec(cluster["spec"], raycluster_docs)


def test_rayjob_manifest(rayjob_docs, raycluster_docs):
    job = one(rayjob_docs, "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    check_cluster_spec(spec["rayClusterSpec"], rayjob_docs)
    # One cluster shape to maintain: the RayJob embeds the same spec as raycluster.yaml.
    assert spec["rayClusterSpec"] == one(raycluster_docs, "RayCluster")["spec"]

    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["archsearch", "search"]
    assert "--ray" in argv
    options = dict(zip(argv, argv[1:]))
    assert options["--ray-address"] == "auto"
    assert options["--db"].startswith("sqlite:////data/"), "the database must be on the claim at /data"
    assert options["--device"] == "cuda"
    assert options["--preset"] == "paper"
    assert options["--data-dir"] == "/data/ptb"
    # The PostgreSQL alternative is shown next to it.
    assert "postgresql+psycopg2://" in RAYJOB.read_text()


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_a_non_root_cuda_image_with_the_project():
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    assert "FROM" in words
    assert all(w == "ARG" for w in words[: words.index("FROM")]), "only ARG may precede FROM"
    base = dict(instructions)["FROM"]
    for name, value in dockerfile_arg_defaults().items():
        base = base.replace("${%s}" % name, value).replace("$" + name, value)
    assert re.search(r"gpu|cuda", base), f"base image {base!r} is not a CUDA image"

    runs = [rest for w, rest in instructions if w == "RUN"]
    assert any(re.search(r"pip install (\S+ )*\.(\s|$)", r) for r in runs), "the project is not installed (pip install .)"
    assert any("psycopg2-binary" in r for r in runs), "PostgreSQL driver missing"
    assert any(w == "COPY" and re.search(r"(^|\s)\.\s+\S+$", rest) for w, rest in instructions), "repo not copied"
    assert "WORKDIR" in words

    users = [rest.split()[0] for w, rest in instructions if w == "USER"]
    assert users, "no USER: the image would run as whatever the base image says"
    assert users[-1].split(":")[0] not in {"root", "0"}, "the image runs as root"

    secret = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY", re.I)
    for w, rest in instructions:
        if w in {"ENV", "ARG"}:
            assert not secret.search(rest), f"{w} {rest}: no credentials in the image"


def test_dockerignore_keeps_what_the_build_needs():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".git" in patterns
    assert any(p.endswith("*.db") for p in patterns)
    needed = ["pyproject.toml", "README.md", "archsearch/cli/__init__.py", "cluster/fetch_ptb.py", "tasks/_base.py"]
    for path in needed:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            bare = pattern.removeprefix("**/")
            hit = any(Path(p).match(bare) for p in prefixes) if not pattern.startswith("!") else False
            assert not hit, f"{pattern!r} would leave {path} out of the image"


# --------------------------------------------------------------------------- archsearch commands

_COMMAND = re.compile(r"(?<![\w./:@${-])archsearch(?![\w.-])[ \t]+(?P<rest>[^\n]*)")
_CUT = re.compile(r"[\"'`;&|>#)]")
_SUBMIT = re.compile(r"submit_search\.py[ \t]+--[ \t]+(?P<rest>[^\n]*)")


def code_regions(text: str) -> list[str]:
    """Fenced blocks and inline code spans of a Markdown text (or of YAML/Dockerfile comments)."""
    fence = r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```"  # fenced blocks, also indented in lists
    regions = re.findall(fence, text, flags=re.S | re.M)
    outside = re.sub(fence, "", text, flags=re.S | re.M)
    # inline spans may wrap a line, never a paragraph
    regions += [r for r in re.findall(r"`([^`]+)`", outside) if not re.search(r"\n\s*\n", r)]
    return regions


def quoted_commands() -> list[tuple[str, str]]:
    """(file, command line) for every `archsearch ...` command in README, YAMLs and Dockerfile."""
    sources: list[tuple[str, str]] = []
    sources += [(README.name, r) for r in code_regions(README.read_text())]
    for path in [*RAY_UP_CONFIGS.values(), RAYCLUSTER, RAYJOB]:
        text = path.read_text()
        comments = "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
        sources += [(path.name, r) for r in code_regions(comments)]
        sources += [(path.name, s) for doc in yaml.safe_load_all(text) for s in strings_in(doc)]
    sources += [(DOCKERFILE.name, rest) for w, rest in dockerfile_instructions() if w in {"RUN", "CMD", "ENTRYPOINT"}]
    commands = []
    for name, text in sources:
        text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
        text = re.sub(r"<[\w-]+>", "PLACEHOLDER", text)  # `export <ID>` is not a redirection
        for match in _COMMAND.finditer(text):
            commands.append((name, "archsearch " + _CUT.split(match["rest"])[0].strip()))
        # `ray submit ... cluster/submit_search.py -- ARGS` is `archsearch search ARGS`.
        for match in _SUBMIT.finditer(text):
            commands.append((name, "archsearch search " + _CUT.split(match["rest"])[0].strip()))
    return commands


def subcommand_and_args(command: str) -> tuple[str | None, list[str]]:
    tokens = command.split()[1:]
    while tokens and tokens[0].startswith("-"):
        option = tokens.pop(0)
        assert option in GLOBAL_OPTIONS, f"unknown global option {option} in {command!r}"
        if option in GLOBAL_OPTIONS_WITH_VALUE and tokens:
            tokens.pop(0)
    if not tokens:
        return None, []
    return tokens[0], tokens[1:]


def test_quoted_archsearch_commands_use_real_subcommands_and_flags():
    commands = quoted_commands()
    readme = [c for f, c in commands if f == README.name]
    assert sum(c.startswith("archsearch search") for c in readme) >= 3
    assert any(c.startswith("archsearch leaderboard") for c in readme)
    assert any(c.startswith("archsearch search") for f, c in commands if f == RAYJOB.name)
    for name, command in commands:
        sub, args = subcommand_and_args(command)
        if sub is None:
            continue  # e.g. `archsearch --help`
        assert sub in SUBCOMMANDS, f"{name}: {command!r} uses unknown subcommand {sub!r}"
        for i, arg in enumerate(args):
            flag = arg.split("=", 1)[0]
            if sub in KNOWN_FLAGS and flag.startswith("-") and flag not in {"-h", "--help"}:
                assert flag in KNOWN_FLAGS[sub], f"{name}: {command!r}: {sub} has no flag {flag}"
            if flag in CHOICES and i + 1 < len(args) and "=" not in arg:
                assert args[i + 1] in CHOICES[flag], f"{name}: {command!r}: bad value for {flag}"


def test_command_extraction_ignores_prose_and_names():
    text = "image ghcr.io/x/archsearch:1 `kubectl get rayjob archsearch-search`\n```\narchsearch -v show lstm\n```"
    found = [c for r in code_regions(text) for c in ["archsearch " + _CUT.split(m["rest"])[0].strip() for m in _COMMAND.finditer(r)]]
    assert found == ["archsearch -v show lstm"]
    assert subcommand_and_args(found[0]) == ("show", ["lstm"])


# --------------------------------------------------------------------------- README


def test_readme_covers_the_runbook():
    text = README.read_text()
    for needle in [
        "docker build -f cluster/Dockerfile",
        "cluster/aws.yaml",
        "ray attach",
        "ray exec",
        "ray submit",
        "ray down",
        "ray dashboard",
        "port-forward",
        "kubectl apply -f cluster/kuberay/raycluster.yaml",
        "kubectl apply -f cluster/kuberay/rayjob.yaml",
        "helm install",
        "--gpus-per-eval 0.25",
        "postgresql+psycopg2://user:pass@host/archsearch",
        "WAL",
    ]:
        assert needle in text, f"README does not mention {needle!r}"
    assert re.search(r"ray up (-y )?cluster/aws\.yaml", text)
    # The throughput section points at the benchmark and has a table for measured numbers.
    section = text.split("Throughput and cost", 1)[1].split("\n## ", 1)[0]
    assert "benchmarks/search_throughput.py" in section
    assert re.search(r"^\|.*\|\s*$", section, flags=re.M)


def test_files_referenced_from_cluster_docs_exist():
    texts = [README.read_text()] + [p.read_text() for p in [*RAY_UP_CONFIGS.values(), RAYCLUSTER, RAYJOB, DOCKERFILE]]
    refs = {m.rstrip(".,:)") for t in texts for m in re.findall(r"(?<![\w/.-])cluster/[\w./-]+", t)}
    refs = {r for r in refs if "*" not in r and not r.endswith("/")}
    assert "cluster/aws.yaml" in refs
    missing = sorted(r for r in refs if not (ROOT / r).exists())
    assert not missing, f"referenced but missing: {missing}"


# --------------------------------------------------------------------------- helper scripts


def _ptb_archive(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri()


@pytest.fixture
def fetch_ptb():
    return runpy.run_path(str(CLUSTER / "fetch_ptb.py"))


def test_fetch_ptb_extracts_the_three_files_once(tmp_path, fetch_ptb, capsys):
    url = _ptb_archive(
        tmp_path / "simple-examples.tgz",
        {
            "./simple-examples/data/ptb.train.txt": b" the cat sat \n",
            "./simple-examples/data/ptb.valid.txt": b" a dog \n",
            "./simple-examples/data/ptb.test.txt": b" the end \n",
            "./simple-examples/data/ptb.char.train.txt": b"t h e\n",
            "./simple-examples/other/ptb.train.txt": b"not this one\n",
        },
    )
    dest = tmp_path / "data" / "ptb"
    assert fetch_ptb["main"]([str(dest), "--url", url]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    assert (dest / "ptb.train.txt").read_bytes() == b" the cat sat \n"
    # Present already: no download at all (this URL does not exist).
    assert fetch_ptb["main"]([str(dest), "--url", (tmp_path / "missing.tgz").as_uri()]) == 0
    assert "already has" in capsys.readouterr().out


def test_fetch_ptb_reports_an_incomplete_archive(tmp_path, fetch_ptb):
    url = _ptb_archive(tmp_path / "a.tgz", {"data/ptb.train.txt": b"x\n"})
    assert fetch_ptb["main"]([str(tmp_path / "ptb"), "--url", url]) == 1
    assert fetch_ptb["main"]([str(tmp_path / "ptb2"), "--url", (tmp_path / "nope.tgz").as_uri()]) == 1


def test_submit_search_runs_the_search_subcommand(monkeypatch):
    cli = pytest.importorskip("archsearch.cli")
    calls = []
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(sys, "argv", ["submit_search.py", "--ray", "--ray-address", "auto"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(CLUSTER / "submit_search.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert calls == [["search", "--ray", "--ray-address", "auto"]]
