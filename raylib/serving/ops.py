"""Operating a running service: deploy a config through the dashboard's REST API, find replicas, count them."""

import time
from typing import Any

from ray import serve


def deploy(config: dict[str, Any], dashboard: str, timeout_s: float = 300.0, insecure: bool = False) -> None:
    """`serve deploy` of a config dict through the dashboard's REST API (what the CLI does; a changed
    user_config then reconfigures running replicas in place), and wait until every application is running.
    An app without a token source on a host beyond this machine is refused unless `insecure`."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from raylib.serving.guards import TOKEN_ENV, TOKEN_FILE_ENV, check_exposure

    host = (config.get("http_options") or {}).get("host", "127.0.0.1")
    for app in config["applications"]:
        env = ((app.get("runtime_env") or {}).get("env_vars") or {})
        check_exposure(host, TOKEN_ENV in env or TOKEN_FILE_ENV in env, insecure)

    ServeSubmissionClient(dashboard).deploy_applications(config)
    names = [a["name"] for a in config["applications"]]
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        apps = serve.status().applications
        if all(n in apps and apps[n].status == "RUNNING"
               and all(d.status == "HEALTHY" for d in apps[n].deployments.values()) for n in names):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the applications {names} did not become ready in {timeout_s:.0f} s: {serve.status()}")


def dashboard_url() -> str:
    """The connected Ray's dashboard address (for `deploy` and the state API)."""
    import ray

    return "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]


def replica_actors(deployment: str, dashboard: str) -> list[str]:
    """Names of the live replica actors of `deployment` (namespace "serve"), e.g. to kill one in a drill."""
    from ray.util.state import list_actors

    return [a.name for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")])
            if a.name and a.name.startswith("SERVE_REPLICA::") and a.name.split("#")[1:2] == [deployment]]


def running_replicas(app: str, deployment: str) -> int:
    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return int(status.deployments[deployment].replica_states.get("RUNNING", 0))
