"""app.json (Heroku-style platforms' manifest) against the Procfile, the engine's variables and
the shapes of the app.json schema (checked here, without the network)."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

from config import load_settings
from config.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "app.json").read_text())

# The app.json schema's top-level keys (https://devcenter.heroku.com/articles/app-json-schema).
TOP_LEVEL = {"name", "description", "keywords", "website", "repository", "logo", "success_url", "scripts",
             "env", "formation", "image", "addons", "buildpacks", "environments", "stack"}
ENV_FIELDS = {"description", "value", "required", "generator"}
DYNO_SIZES = {"eco", "basic", "standard-1x", "standard-2x", "performance-m", "performance-l",
              "performance-l-ram", "performance-xl", "performance-2xl", "private-s", "private-m", "private-l",
              "shield-s", "shield-m", "shield-l"}
# Where an add-on attaches without `as`, its config var is this name + _URL.
DEFAULT_ATTACHMENT = {"heroku-postgresql": "DATABASE", "heroku-redis": "REDIS"}


def procfile_types() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def addon_vars() -> dict[str, str]:
    """The config vars the add-ons set, by add-on service."""
    found = {}
    for addon in MANIFEST["addons"]:
        plan = addon if isinstance(addon, str) else addon["plan"]
        service = plan.split(":", 1)[0]
        name = addon.get("as") if isinstance(addon, dict) else None
        found[service] = f"{name or DEFAULT_ATTACHMENT[service]}_URL"
    return found


def deploy_environment() -> dict[str, str]:
    """What a deploy sets: every value, a secret where one is generated (as Heroku's generator
    does: 64 hex characters), and the add-ons' URLs."""
    env = {}
    for name, spec in MANIFEST["env"].items():
        if isinstance(spec, str):
            env[name] = spec
        elif spec.get("generator") == "secret":
            env[name] = secrets.token_hex(32)
        elif "value" in spec:
            env[name] = spec["value"]
    env["DATABASE_URL"] = "postgres://user:pass@ec2-host.compute-1.amazonaws.com:5432/d8f"
    env["REDIS_URL"] = "rediss://:pass@ec2-host.compute-1.amazonaws.com:21870"
    return env


def test_app_json_has_the_schemas_shapes():
    assert set(MANIFEST) <= TOP_LEVEL, set(MANIFEST) - TOP_LEVEL
    assert isinstance(MANIFEST["name"], str) and 3 <= len(MANIFEST["name"]) <= 30
    assert isinstance(MANIFEST["description"], str) and all(isinstance(k, str) for k in MANIFEST["keywords"])
    for spec in MANIFEST["env"].values():
        assert isinstance(spec, str) or (isinstance(spec, dict) and set(spec) <= ENV_FIELDS), spec
        if isinstance(spec, dict):
            assert isinstance(spec.get("description", ""), str) and isinstance(spec.get("value", ""), str)
            assert isinstance(spec.get("required", True), bool)
            assert spec.get("generator", "secret") == "secret", "the only generator there is"
    for process in MANIFEST["formation"].values():
        assert set(process) <= {"quantity", "size"}
        assert isinstance(process["quantity"], int) and process["quantity"] >= 0
        assert process["size"] in DYNO_SIZES
    for addon in MANIFEST["addons"]:
        assert isinstance(addon, str) or (isinstance(addon, dict) and set(addon) <= {"plan", "as", "options"})
    assert all(set(b) == {"url"} and isinstance(b["url"], str) for b in MANIFEST["buildpacks"])


def test_every_process_type_of_the_formation_is_in_the_procfile_and_release_runs_the_migrations():
    types = procfile_types()
    assert set(MANIFEST["formation"]) == {"web", "worker"} and set(MANIFEST["formation"]) <= set(types)
    # The release phase is the Procfile's `release` entry: no formation, no app.json script.
    assert "release" not in MANIFEST["formation"] and types["release"].split() == ["exec", "engine", "migrate"]
    assert {"url": "heroku/python"} in MANIFEST["buildpacks"]


def test_every_variable_app_json_names_is_one_the_engine_reads():
    assert set(MANIFEST["env"]) <= set(VARIABLES), set(MANIFEST["env"]) - set(VARIABLES)


def test_the_database_and_the_bus_come_from_the_add_ons_and_nobody_types_them():
    assert addon_vars() == {"heroku-postgresql": "DATABASE_URL", "heroku-redis": "REDIS_URL"}
    assert not {"DATABASE_URL", "REDIS_URL"} & set(MANIFEST["env"])


def test_operator_owner_id_and_webhook_secrets_are_generated_and_nothing_else_needs_typing():
    generated = {n for n, s in MANIFEST["env"].items() if isinstance(s, dict) and s.get("generator")}
    assert generated == {"ADMIN_KEYS", "KEY_ID_SECRET", "WEBHOOK_SECRET"}, "API_KEYS: made through /api/admin/keys"
    for name, spec in MANIFEST["env"].items():  # required without a value blocks a one-click deploy
        assert isinstance(spec, str) or "value" in spec or "generator" in spec or spec.get("required") is False, name


def test_a_deploy_s_environment_loads_with_authentication_on_behind_one_proxy():
    settings = load_settings(deploy_environment(), dotenv=None)
    assert len(settings.admin_keys) == 1 and len(settings.admin_keys[0]) >= 32
    assert len(settings.key_id_secret) >= 32 and len(settings.webhook_secret) >= 32 and settings.api_keys == ()
    assert settings.trusted_proxy_hops == 1 and not settings.embedded
