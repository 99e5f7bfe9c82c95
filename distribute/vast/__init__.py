"""Vast.ai for git-distribute: rent machines that run the worker image, watch them, destroy them.

* :mod:`.query` — the offer query language, ``-e``/``-p`` options, launch modes, request bodies
  (pure functions);
* :mod:`.api` — the HTTP client: one session with bounded retries, :class:`VastError`;
* :mod:`.nodes` — offers, instances, renting and terminating nodes, a node's environment, and a
  node destroying itself with its own per-instance key.

Everything public is re-exported here (``from distribute import vast; vast.rent_nodes(...)``).
"""
from ..exceptions import DistributeError
from .api import (
    DEFAULT_API_URL,
    VastError,
    VastWarning,
    apiurl,
    base_url,
    http_del,
    http_get,
    http_post,
    http_put,
)
from .nodes import (
    KEY_VARS,
    NODE_ENTRYPOINT,
    NODE_LOG,
    create_instance,
    destroy_instance,
    get_instance,
    hold_keys,
    instance_logs,
    list_instances,
    node_env,
    rent_nodes,
    search_offers,
    self_destruct,
    terminate_nodes,
)
from .query import (
    api_message,
    create_body,
    get_runtype,
    node_command,
    node_flag,
    parse_env,
    parse_order,
    parse_query,
)

__all__ = ["VastError", "VastWarning", "DistributeError", "apiurl", "base_url", "http_get",
           "http_put", "http_post", "http_del", "parse_query", "parse_env", "parse_order",
           "get_runtype", "create_body", "api_message", "node_command", "node_flag",
           "search_offers", "create_instance", "destroy_instance", "list_instances",
           "get_instance", "instance_logs", "rent_nodes", "terminate_nodes", "self_destruct",
           "node_env", "hold_keys", "KEY_VARS", "DEFAULT_API_URL", "NODE_ENTRYPOINT", "NODE_LOG"]
