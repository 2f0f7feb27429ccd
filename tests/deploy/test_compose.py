"""docker-compose.yml, its CPU override and the Dockerfile, checked without a Docker engine:
the Compose Specification's JSON schema, the healthchecks and start order, GPU reservations,
persistence, local-only ports and the optional profiles, and images built from pinned packages
as a non-root user."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata

import jsonschema_rs
import pytest

from tests.deploy.compose import (
    COMPOSE,
    CPU_OVERRIDE,
    ROOT,
    SCHEMA,
    VARIABLE,
    load,
    merge,
    unwrap,
)

DOCKERFILE = ROOT / "docker" / "Dockerfile"
LOCK = ROOT / "requirements.lock"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("api", "worker", "trainer")
OPS_SERVICES = ("dashboard",)  # profile "ops": looks at the others, runs nothing of its own


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


@pytest.fixture(scope="module")
def validator():
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


@pytest.fixture(scope="module", params=["defaults", ".env.example"])
def compose(request) -> dict:
    """The compose file as `docker compose config` sees it, with no .env and with the example."""
    return load(COMPOSE, {} if request.param == "defaults" else env_example())


def errors(validator, document) -> list[str]:
    return [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_files_follow_the_compose_specification(validator, compose):
    assert errors(validator, compose) == []
    override = load(CPU_OVERRIDE, {})
    assert errors(validator, unwrap(override)) == []
    assert errors(validator, merge(compose, override)) == []


def test_the_schema_check_catches_mistakes(validator, compose):
    """The check can fail: a misspelt key and a wrongly typed healthcheck are reported."""
    bad = json.loads(json.dumps(compose))
    bad["services"]["api"]["healtcheck"] = bad["services"]["api"].pop("healthcheck")
    bad["services"]["worker"]["healthcheck"]["test"] = {"cmd": "x"}
    found = errors(validator, bad)
    assert any("healtcheck" in e for e in found), found
    assert any("services/worker/healthcheck/test" in e for e in found), found


def test_every_service_has_a_healthcheck_and_dependants_wait_for_healthy(compose):
    services = compose["services"]
    assert set(services) == {"redis", *APP_SERVICES, *OPS_SERVICES}
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        for needed, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, needed)
            assert "healthcheck" in services[needed]
    for name in (*APP_SERVICES, *OPS_SERVICES):
        assert "redis" in services[name]["depends_on"], name


def test_redis_persists_on_a_volume(compose):
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    data_dir = command[command.index("--dir") + 1]
    volume = next(v for v in redis["volumes"] if v.split(":")[1] == data_dir)
    assert volume.split(":")[0] in compose["volumes"]  # a named volume, not the container's
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", redis["image"])  # pinned


def test_gpu_reservations_and_the_cpu_override(compose):
    for name in APP_SERVICES:
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [
            {"driver": "nvidia", "count": devices[0]["count"], "capabilities": ["gpu"]}
        ]
        assert devices[0]["count"] == "all" or devices[0]["count"].isdigit()
    cpu = merge(compose, load(CPU_OVERRIDE, {}))
    for name in APP_SERVICES:
        assert "resources" not in cpu["services"][name].get("deploy", {}), name
    # Scaling is kept by the override; the rest of each service is untouched.
    assert (
        cpu["services"]["worker"]["deploy"]["replicas"]
        == compose["services"]["worker"]["deploy"]["replicas"]
    )
    assert cpu["services"]["api"]["command"] == compose["services"]["api"]["command"]


def test_settings_come_from_the_environment():
    settings = {
        "MOFO_WORKERS": "3",
        "MOFO_API_PORT": "9000",
        "MOFO_GPUS": "1",
        "MOFO_DATA_DIR": "/srv/datasets",
        "MOFO_DEVICE": "cuda:1",
    }
    compose = load(COMPOSE, settings)
    services = compose["services"]
    assert services["worker"]["deploy"]["replicas"] == "3"
    assert services["api"]["ports"] == ["9000:8000"]
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "1"
    assert "/srv/datasets:/data:ro" in services["worker"]["volumes"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["MOFO_DEVICE"] == "cuda:1"
        assert services[name]["environment"]["MOFO_REDIS_URL"] == "redis://redis:6379/0"


def test_env_example_documents_every_variable_the_compose_file_reads():
    text = "\n".join(
        line.split(" #")[0]
        for line in COMPOSE.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    # Compose's own variables; $$ escapes one for the container's shell ($${NAME:-x}).
    used = {m["braced"] or m["named"] for m in VARIABLE.finditer(text)} - {None}
    assert used == set(env_example())


def test_only_the_trainer_and_the_dashboard_are_in_profiles(compose):
    """A plain `docker compose up` starts redis, api and worker; the others are asked for."""
    services = compose["services"]
    assert services["trainer"]["profiles"] == ["train"]
    assert services["dashboard"]["profiles"] == ["ops"]
    assert all("profiles" not in services[n] for n in ("redis", "api", "worker"))


def test_only_the_api_is_published_beyond_this_host(compose):
    """Redis and the dashboard bind their host ports to 127.0.0.1 (the API has its keys)."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name != "api":
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert compose["services"]["dashboard"]["ports"] == ["127.0.0.1:9181:9181"]


def test_the_dashboard_runs_the_worker_image_and_needs_a_password(compose):
    """The worker's image (the same rq as the workers), read-only (--disable-delete), its
    credentials from .env; the password check itself runs in tests/deploy/test_dashboard.py."""
    services = compose["services"]
    dashboard, worker = services["dashboard"], services["worker"]
    assert (dashboard["build"], dashboard["image"]) == (worker["build"], worker["image"])
    assert "exec rq-dashboard --disable-delete" in dashboard["command"][-1]
    assert "--password" not in dashboard["command"][-1]  # not on a command line ps can read
    env = dashboard["environment"]
    assert env["MOFO_REDIS_URL"] == "redis://redis:6379/0"
    assert (env["RQ_DASHBOARD_USERNAME"], env["RQ_DASHBOARD_PASSWORD"]) == ("mofo", "")
    assert "deploy" not in dashboard  # no GPU
    secret = load(COMPOSE, {"MOFO_DASHBOARD_PASSWORD": "x" * 24, "MOFO_DASHBOARD_PORT": "9999"})
    assert secret["services"]["dashboard"]["environment"]["RQ_DASHBOARD_PASSWORD"] == "x" * 24
    assert secret["services"]["dashboard"]["ports"] == ["127.0.0.1:9999:9181"]


def dockerfile_stages() -> dict[str, list[str]]:
    """Each stage's instructions (continuation lines joined), by stage name."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match[1]
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def instruction(stage: list[str], name: str) -> list[str]:
    return [line[len(name) :].strip() for line in stage if line.upper().startswith(name + " ")]


def test_images_run_as_a_non_root_user_with_the_compose_healthcheck(compose):
    stages = dockerfile_stages()
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["build"] == {
            "context": ".",
            "dockerfile": "docker/Dockerfile",
            "target": name,
        }
        stage = stages[name]
        assert stage[0].split()[1] == "runtime", name  # built on the shared runtime stage
        assert instruction(stage, "USER") == ["mofo"], name
        (check,) = instruction(stage, "HEALTHCHECK")
        command = json.loads(check[check.index("CMD ") + 4 :])
        # The image's own healthcheck is the compose file's (docker run gets it too).
        test = service["healthcheck"]["test"]
        if test[0] == "CMD":
            assert command == test[1:], name
        else:
            assert command[:2] == ["sh", "-c"] and "mofo.shared.health trainer" in command[2], name
        (cmd,) = instruction(stage, "CMD")
        assert json.loads(cmd)[0] == "mofo"
    runtime = " ".join(stages["runtime"])
    assert "useradd --uid 1000" in runtime
    assert "pip install --no-deps -r requirements.lock" in runtime
    # Triton (the CUDA TV-L1 kernels) compiles its launchers with the system C compiler at run time
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\bgcc\b", runtime)
    assert "libc6-dev" in runtime


def lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")  # every line an exact pin
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def requirement_names(extra: str | None = None) -> set[str]:
    names = set()
    for requirement in metadata.requires("mofo") or []:
        spec, _, marker = requirement.partition(";")
        if ("extra ==" in marker) != (extra is not None) or (extra and f'"{extra}"' not in marker):
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", spec.strip())[0]
        names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def test_the_lock_pins_every_dependency_at_the_tested_version():
    pins = lock()
    assert requirement_names() - pins.keys() == set()  # every runtime dependency is pinned
    assert requirement_names("gpu") - pins.keys() == set()  # and CuPy for the GPU
    # and the dashboard (read from pyproject.toml: the ops extra runs in the worker image)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ops = extras["optional-dependencies"]["ops"]
    ops_names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r)[0]).lower() for r in ops}
    assert ops_names == {"rq-dashboard", "six"} and ops_names <= pins.keys()
    assert requirement_names("dev").isdisjoint({"pytest", "ruff"} & pins.keys())
    assert pins["torch"] == "2.14.1"
    installed = {
        re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version
        for d in metadata.distributions()
    }
    differs = {
        n: (v, installed[n]) for n, v in pins.items() if n in installed and installed[n] != v
    }
    assert differs == {}, "the test environment is not the lock's: run scripts/setup.sh"


def test_the_build_context_holds_what_the_dockerfile_copies():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = [s for line in copied for s in line.split()]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source
    assert {".venv", ".git", "data", "runs"} <= ignored


def test_the_lock_is_a_whole_environment():
    """The images install the lock with --no-deps: every requirement of every locked package
    (on Linux, Python 3.11, no extras) must itself be locked at a version it accepts."""
    from packaging.requirements import Requirement

    pins = lock()
    checked, missing = 0, []
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name not in pins:
            continue
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            wanted = re.sub(r"[-_.]+", "-", requirement.name).lower()
            checked += 1
            if wanted not in pins or not requirement.specifier.contains(
                pins[wanted], prereleases=True
            ):
                missing.append(f"{name} needs {requirement}, lock has {pins.get(wanted)}")
    assert missing == []
    assert checked > 50  # the check saw the packages' requirements
