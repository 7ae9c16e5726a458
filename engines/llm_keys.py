"""Where the API key of an OpenAI-compatible server comes from: the environment or a config file, never
a node input.

Widget values are saved in workflows and in the PNG metadata of every image ComfyUI writes, so a key
typed into a node would leak with the first shared picture. The key is looked up here instead, in
this order (the first one found wins):

1. ``AGENTIC_EDIT_API_KEY`` in the environment (this pack's own variable, for any base URL);
2. the config file's key for this base URL (``[llm.keys]``, matched by URL, else by host name);
3. ``OPENAI_API_KEY`` in the environment (what the ``openai`` SDK itself reads);
4. the config file's ``[llm] api_key``.

The config file is ``$AGENTIC_EDIT_CONFIG`` when set, else ``$XDG_CONFIG_HOME/agentic-edit/config.toml``
(``~/.config/agentic-edit/config.toml``)::

    [llm]
    api_key = "sk-..."                                    # used for any base URL without its own key
    [llm.keys]
    "https://api.groq.com/openai/v1" = "gsk_..."          # by base URL
    "openrouter.ai" = "sk-or-..."                         # or by host name

A server on this machine or the local network (Ollama, LM Studio, vLLM on 127.0.0.1, ::1,
``localhost``, 10.x, 192.168.x ...) needs no key: when none is configured a placeholder is sent,
since the ``openai`` SDK refuses to run without one. Anywhere else a missing key is an error that
says where to put one. Key values are never logged; only where they came from.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ENV_KEY = "AGENTIC_EDIT_API_KEY"
ENV_OPENAI_KEY = "OPENAI_API_KEY"
ENV_CONFIG = "AGENTIC_EDIT_CONFIG"
# Sent to key-less local servers: the SDK needs a non-empty key, and these servers ignore it.
LOCAL_PLACEHOLDER_KEY = "not-needed-for-a-local-server"


class LLMConfigLookupError(ValueError):
    """A config file that cannot be read, or a base URL that is not an http(s) URL."""


@dataclass(frozen=True)
class ApiKey:
    value: str = field(repr=False)  # never in a repr, a log line or an error message
    source: str  # where it came from, for messages: "environment variable AGENTIC_EDIT_API_KEY", ...


def config_path() -> Path:
    """The config file this process reads (it may not exist)."""
    explicit = os.environ.get(ENV_CONFIG, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base).expanduser() / "agentic-edit" / "config.toml"


def load_llm_config(path: Path | None = None) -> dict:
    """The ``[llm]`` table of the config file (empty when the file does not exist)."""
    path = Path(path) if path is not None else config_path()
    if not path.is_file():
        if os.environ.get(ENV_CONFIG, "").strip() and path == config_path():
            raise LLMConfigLookupError(f"{ENV_CONFIG} names {path}, which is not a file; "
                                       "create it or unset the variable")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise LLMConfigLookupError(f"cannot read the config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LLMConfigLookupError(f"the config file {path} is not valid TOML ({exc}); "
                                   "see engines/llm_keys.py for the expected [llm] table") from None
    table = data.get("llm", {})
    if not isinstance(table, dict):
        raise LLMConfigLookupError(f"{path}: 'llm' must be a table ([llm]), not {type(table).__name__}")
    return table


def normalize_base_url(base_url: str) -> str:
    """``scheme://host[:port]/path`` with the scheme and host lower-cased and no trailing slash;
    raises for anything that is not an http(s) URL with a host."""
    text = (base_url or "").strip() if isinstance(base_url, str) else ""
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise LLMConfigLookupError(
            f"base_url: {base_url!r} is not an http(s) URL; write the server's OpenAI-compatible address, "
            "for example 'https://api.openai.com/v1' or 'http://127.0.0.1:11434/v1' (Ollama)")
    netloc = parts.hostname.lower() if ":" not in parts.hostname else f"[{parts.hostname.lower()}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def is_local_url(base_url: str) -> bool:
    """True for servers on this machine or a private network (they need no key)."""
    host = (urlsplit(normalize_base_url(base_url)).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


def _config_key_for(table: dict, base_url: str, path: Path) -> ApiKey | None:
    keys = table.get("keys", {})
    if not isinstance(keys, dict):
        raise LLMConfigLookupError(f"{path}: [llm.keys] must be a table of base URL = \"key\" entries")
    wanted = normalize_base_url(base_url)
    host = urlsplit(wanted).hostname
    by_url, by_host = None, None
    for name, value in keys.items():
        if not isinstance(value, str) or not value.strip():
            raise LLMConfigLookupError(f"{path}: [llm.keys] entry {name!r} must be a non-empty string")
        if "://" in name:
            try:
                if normalize_base_url(name) == wanted:
                    by_url = ApiKey(value.strip(), f"config file {path} [llm.keys] {name!r}")
            except LLMConfigLookupError:
                raise LLMConfigLookupError(f"{path}: [llm.keys] entry {name!r} is not an http(s) URL") from None
        elif name.strip().lower() == host:
            by_host = ApiKey(value.strip(), f"config file {path} [llm.keys] {name!r}")
    return by_url or by_host


def resolve_api_key(base_url: str) -> ApiKey | None:
    """The key for ``base_url`` (see the module doc for the order), or None when none is set."""
    value = os.environ.get(ENV_KEY, "").strip()
    if value:
        return ApiKey(value, f"environment variable {ENV_KEY}")
    path = config_path()
    table = load_llm_config(path)
    found = _config_key_for(table, base_url, path)
    if found:
        return found
    value = os.environ.get(ENV_OPENAI_KEY, "").strip()
    # OPENAI_API_KEY is an OpenAI credential: never send it to another provider's server.
    if value and _is_openai_host(base_url):
        return ApiKey(value, f"environment variable {ENV_OPENAI_KEY}")
    value = table.get("api_key")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise LLMConfigLookupError(f"{path}: [llm] api_key must be a non-empty string")
    if value:
        return ApiKey(value.strip(), f"config file {path} [llm] api_key")
    return None


def _is_openai_host(base_url: str) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(normalize_base_url(base_url)).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


def missing_key_message(base_url: str) -> str:
    return (f"no API key for {base_url}: set the environment variable {ENV_KEY} ({ENV_OPENAI_KEY} is used for api.openai.com only), "
            f"or put it in {config_path()} as [llm] api_key = \"...\" (or under [llm.keys] for this URL). "
            "Keys are never read from node inputs, because those are saved in workflows and images. "
            "A server that needs no key on another machine: give it any placeholder key there.")


__all__ = ["ENV_KEY", "ENV_OPENAI_KEY", "ENV_CONFIG", "LOCAL_PLACEHOLDER_KEY", "ApiKey", "LLMConfigLookupError",
           "config_path", "load_llm_config", "normalize_base_url", "is_local_url", "resolve_api_key",
           "missing_key_message"]
