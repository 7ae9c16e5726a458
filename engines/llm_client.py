"""One chat client for every OpenAI-compatible server (OpenAI, Groq, vLLM, Ollama, LM Studio ...).

``ChatClient(base_url, model).complete(messages, images=..., response_format=...)`` sends one Chat
Completions request through the ``openai`` SDK and returns the reply's text. What it adds to the SDK:

* the key comes from the environment or the config file only (``engines/llm_keys.py``), with a
  placeholder for key-less local servers;
* images (numpy / PIL) go as ``data:`` URLs, downscaled to ``image_max_side`` and re-encoded until
  they fit ``image_max_bytes`` (servers cap request and image sizes);
* structured output degrades gracefully: a ``json_schema`` format that a server rejects (HTTP 400/422)
  is retried as ``json_object``, then with none; the client remembers what worked;
* every failure (server down, timeout, HTTP error, a body that is not a chat completion) is one
  ``LLMError`` whose message names the base URL and what happened.

Messages use the Chat Completions shape. An image may also be given as a ``{"type": "image"}``
placeholder part, filled in order from ``images`` (the convention of ``GroundingEngine.chat``, so one
message list serves both a remote server and the local Qwen engine); with no placeholder the images
go before the first user message's text.

Layering: this module lives in ``engines/`` because the prompt writer (an engine) uses it. ``agent/``
imports no engine, so the planner takes a chat callable (``ChatClient.complete``) that the node which
runs it builds here, the same way it hands the planner the local Qwen engine's ``chat``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any, Sequence

from PIL import Image

from .imaging import rgb_to_pil, to_rgb_array
from .llm_keys import (LOCAL_PLACEHOLDER_KEY, ApiKey, LLMConfigLookupError, is_local_url, missing_key_message,
                       normalize_base_url, resolve_api_key)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_IMAGE_MAX_SIDE = 1024
# Groq caps a base64 image at 4 MB and OpenAI a request at 20 MB: 3.5 MB per image is safe everywhere.
DEFAULT_IMAGE_MAX_BYTES = 3_500_000
IMAGE_FORMATS = ("jpeg", "png")
# Structured-output levels, strictest first; a server that rejects one is asked with the next.
_FORMAT_LEVELS = ("json_schema", "json_object", None)


class LLMError(RuntimeError):
    """An OpenAI-compatible server could not give an answer. ``kind`` says why: "config" (no key, bad
    URL, unreadable config file), "connection", "timeout", "http" (``status`` is set) or "response"
    (an answer that is not a usable chat completion)."""

    def __init__(self, message: str, *, kind: str, base_url: str = "", status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.kind, self.base_url, self.status = kind, base_url, status
        self.detail = detail  # the server's own error message, when it sent one


class LLMConfigError(LLMError, ValueError):
    """Bad settings (no key for a remote server, a base URL that is not a URL, a broken config file):
    the user must fix them, so callers never fall back silently on this one."""

    def __init__(self, message: str, base_url: str = ""):
        super().__init__(message, kind="config", base_url=base_url)


def json_schema_format(name: str, schema: dict, strict: bool = True) -> dict:
    """The ``response_format`` that asks for JSON matching ``schema`` (OpenAI's structured outputs;
    vLLM, Ollama, LM Studio and Groq read the same shape)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


def image_to_data_url(image, max_side: int = DEFAULT_IMAGE_MAX_SIDE, image_format: str = "jpeg",
                      max_bytes: int = DEFAULT_IMAGE_MAX_BYTES, name: str = "image") -> str:
    """A ``data:image/...;base64`` URL of ``image`` (float RGB array, any array ``to_rgb_array``
    takes, or PIL), its longer side at most ``max_side`` pixels (never enlarged). When the encoding
    is still over ``max_bytes`` the image is shrunk further until it fits."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    if not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 16:
        raise ValueError(f"image_max_side: expected a whole number of pixels of at least 16, got {max_side!r}")
    picture = rgb_to_pil(to_rgb_array(image, name))
    side = min(max_side, max(picture.size))
    while True:
        scale = side / max(picture.size)
        sized = picture if scale >= 1 else picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.LANCZOS)
        buffer = io.BytesIO()
        if image_format == "jpeg":
            sized.save(buffer, "JPEG", quality=90)
        else:
            sized.save(buffer, "PNG", optimize=True)
        data = buffer.getvalue()
        encoded_size = (len(data) + 2) // 3 * 4
        if encoded_size <= max_bytes or side <= 64:
            break
        side = int(side * 0.75)
    return f"data:image/{image_format};base64,{base64.b64encode(data).decode('ascii')}"


class ChatClient:
    """Chat Completions against ``base_url`` (the address that ends in ``/v1``) with ``model``.

    ``timeout`` is per try in seconds; ``max_retries`` retries connection errors, timeouts, HTTP 408,
    409, 429 and 5xx (the SDK's rule, honouring ``Retry-After``), so the worst case is
    ``timeout * (max_retries + 1)`` plus back-off. The key is resolved here, once.
    """

    def __init__(self, base_url: str, model: str, temperature: float | None = 0.2, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, *, image_max_side: int = DEFAULT_IMAGE_MAX_SIDE,
                 image_format: str = "jpeg", image_max_bytes: int = DEFAULT_IMAGE_MAX_BYTES):
        try:
            self.base_url = normalize_base_url(base_url)
        except LLMConfigLookupError as exc:
            raise LLMConfigError(str(exc), base_url=str(base_url)) from None
        if not isinstance(model, str) or not model.strip():
            raise LLMConfigError(f"model: empty; name the model the server at {self.base_url} should run "
                                 "(for example 'gpt-4o-mini', or 'qwen2.5vl:7b' on Ollama)", self.base_url)
        self.model = model.strip()
        # None sends no temperature (the server's default): what OpenAI's reasoning models require.
        self.temperature = None if temperature is None else _number(temperature, "temperature", 0.0, 2.0)
        self.timeout = _number(timeout, "timeout", 0.001, 3600.0)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 10:
            raise LLMConfigError(f"max_retries: expected a whole number from 0 to 10, got {max_retries!r}",
                                 self.base_url)
        self.max_retries = max_retries
        if image_format not in IMAGE_FORMATS:
            raise LLMConfigError(f"image_format: {image_format!r} is not one of {', '.join(IMAGE_FORMATS)}",
                                 self.base_url)
        for name, value, low in (("image_max_side", image_max_side, 16), ("image_max_bytes", image_max_bytes, 10_000)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LLMConfigError(f"{name}: expected a whole number of at least {low}, got {value!r}",
                                     self.base_url)
        self.image_max_side, self.image_format, self.image_max_bytes = image_max_side, image_format, image_max_bytes
        self.key = self._api_key()
        # What this server turned out to accept (learned from HTTP 400/422 answers, kept for later calls).
        self._format_level = 0  # index into _FORMAT_LEVELS
        self._send_temperature = True
        self._token_parameter = "max_tokens"
        self._sdk = None

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, key from {self.key.source!r})"

    def _api_key(self) -> ApiKey:
        try:
            key = resolve_api_key(self.base_url)
        except LLMConfigLookupError as exc:
            raise LLMConfigError(str(exc), self.base_url) from None
        if key is not None:
            return key
        if is_local_url(self.base_url):
            return ApiKey(LOCAL_PLACEHOLDER_KEY, "none needed (local server)")
        raise LLMConfigError(missing_key_message(self.base_url), self.base_url)

    def _client(self):
        if self._sdk is None:
            import openai

            self._sdk = openai.OpenAI(base_url=self.base_url, api_key=self.key.value, timeout=self.timeout,
                                      max_retries=self.max_retries)
        return self._sdk

    # ---- requests ---------------------------------------------------------------------------------

    def complete(self, messages: Sequence[dict], images: Sequence = (), response_format: dict | None = None,
                 max_tokens: int | None = None) -> str:
        """The reply text to ``messages`` (see the module doc for image placeholders).

        ``response_format``: None, ``{"type": "json_object"}`` or ``json_schema_format(...)``. A format
        the server rejects with HTTP 400/422 is retried at the next looser level, so the reply may be
        free text: parse it tolerantly. ``max_tokens`` caps the reply (None: the server's limit).
        """
        payload = self.build_messages(messages, images)
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise LLMConfigError(f"max_tokens: expected a whole number of at least 1, got {max_tokens!r}",
                                 self.base_url)
        wanted = _level_of(response_format)
        level = max(wanted, self._format_level)
        while True:
            fmt = _format_at(response_format, level)
            try:
                text = self._request(payload, fmt, max_tokens)
            except LLMError as exc:
                if not (exc.kind == "http" and exc.status in (400, 422)):
                    raise
                if self._adapt_parameters(exc, max_tokens):
                    continue
                if fmt is not None and level + 1 < len(_FORMAT_LEVELS):
                    log.info("%s rejected response_format %s (%s); retrying with %s", self.base_url,
                             _FORMAT_LEVELS[level], exc, _FORMAT_LEVELS[level + 1] or "none")
                    level += 1
                    continue
                raise
            if level > wanted:
                self._format_level = max(self._format_level, level)
            return text

    def _adapt_parameters(self, exc: LLMError, max_tokens: int | None) -> bool:
        """Adjust to a server that refuses a parameter by name, once each (remembered): OpenAI's
        reasoning models take only the default temperature and want ``max_completion_tokens``."""
        message = exc.detail.lower()
        if "temperature" in message and self._send_temperature and self.temperature is not None:
            log.info("%s refused temperature (%s); sending none from now on", self.base_url, exc)
            self._send_temperature = False
            return True
        if "max_tokens" in message and max_tokens is not None and self._token_parameter == "max_tokens":
            log.info("%s refused max_tokens (%s); sending max_completion_tokens from now on", self.base_url, exc)
            self._token_parameter = "max_completion_tokens"
            return True
        return False

    def list_models(self) -> list[str]:
        """The model ids the server offers (``GET /models``)."""
        try:
            page = self._client().models.list()
            return [m.id for m in page.data]
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one LLMError
            raise self._error(exc) from None

    def build_messages(self, messages: Sequence[dict], images: Sequence = ()) -> list[dict]:
        """Chat Completions messages with every image as an ``image_url`` data-URL part."""
        if not isinstance(messages, (list, tuple)) or not messages:
            raise LLMConfigError("messages: expected a non-empty list of {'role', 'content'} dicts", self.base_url)
        urls = [image_to_data_url(img, self.image_max_side, self.image_format, self.image_max_bytes, f"images[{i}]")
                for i, img in enumerate(images)]
        out, used = [], 0
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
                raise LLMConfigError(f"messages[{i}]: expected {{'role': 'system'|'user'|'assistant', 'content': ..}}",
                                     self.base_url)
            content = message.get("content")
            if isinstance(content, str):
                out.append({"role": message["role"], "content": content})
                continue
            if not isinstance(content, (list, tuple)):
                raise LLMConfigError(f"messages[{i}].content: expected a string or a list of parts", self.base_url)
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image":
                    if used >= len(urls):
                        raise LLMConfigError(f"messages[{i}]: more image placeholders than images "
                                             f"({len(urls)} given)", self.base_url)
                    parts.append(_image_part(urls[used]))
                    used += 1
                elif isinstance(part, dict) and part.get("type") in ("text", "image_url"):
                    parts.append(dict(part))
                else:
                    raise LLMConfigError(f"messages[{i}].content: unknown part {part!r}", self.base_url)
            out.append({"role": message["role"], "content": parts})
        if used == 0 and urls:
            first_user = next((m for m in out if m["role"] == "user"), None)
            if first_user is None:
                raise LLMConfigError("messages: images were given but there is no user message", self.base_url)
            if isinstance(first_user["content"], str):
                first_user["content"] = [{"type": "text", "text": first_user["content"]}]
            first_user["content"][:0] = [_image_part(url) for url in urls]
        elif used != len(urls):
            raise LLMConfigError(f"images: {len(urls)} given but the messages hold {used} placeholder(s)",
                                 self.base_url)
        return out

    def _request(self, messages: list[dict], response_format: dict | None, max_tokens: int | None) -> str:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if self._send_temperature and self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if response_format is not None:
            kwargs["response_format"] = response_format
        if max_tokens is not None:
            kwargs[self._token_parameter] = max_tokens
        try:
            completion = self._client().chat.completions.create(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one LLMError
            raise self._error(exc) from None
        return self._reply_text(completion)

    def _reply_text(self, completion) -> str:
        # A body that is not JSON comes back from the SDK as a plain string; a JSON body of another
        # shape as a ChatCompletion with fields missing.
        if isinstance(completion, str):
            raise LLMError(f"the server at {self.base_url} did not answer with JSON (got {_snippet(completion)}); "
                           "check that the base URL is the OpenAI-compatible API (it usually ends in /v1)",
                           kind="response", base_url=self.base_url)
        try:
            choice = completion.choices[0]
            message = choice.message
            text = message.content
        except (AttributeError, IndexError, TypeError, KeyError):
            raise LLMError(f"the server at {self.base_url} answered with JSON that is not a chat completion "
                           f"(no choices[0].message); is the base URL an OpenAI-compatible API?",
                           kind="response", base_url=self.base_url) from None
        if not isinstance(text, str) or not text.strip():
            refusal = getattr(message, "refusal", None)
            reason = f"refused: {refusal}" if refusal else f"finish_reason={getattr(choice, 'finish_reason', None)}"
            raise LLMError(f"{self.model} at {self.base_url} answered with no text ({reason})",
                           kind="response", base_url=self.base_url)
        return text

    def _error(self, exc: Exception) -> LLMError:
        import openai

        url = self.base_url
        tries = f" ({self.max_retries + 1} tries)" if self.max_retries else ""
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"the server at {url} did not answer within {self.timeout:g} s{tries}; "
                            "raise the timeout or use a faster model", kind="timeout", base_url=url)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f": {cause}" if cause else ""
            return LLMError(f"could not connect to {url}{tries}{detail}; is the server running and the base URL right?",
                            kind="connection", base_url=url)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _server_message(exc)
            hint = {401: f"the API key (from {self.key.source}) was refused; check it",
                    403: f"the API key (from {self.key.source}) may not use this model or endpoint",
                    404: f"check the base URL (it usually ends in /v1) and that the server has model {self.model!r}",
                    429: "rate limited or out of quota; wait, or raise max_retries"}.get(status)
            if hint is None:
                hint = "the server failed; try again later" if status >= 500 else "the server refused the request"
            return LLMError(f"HTTP {status} from {url}: {detail!r}; {hint}", kind="http", base_url=url, status=status,
                            detail=detail)
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError)):
            return LLMError(f"the server at {url} sent a body that is not valid JSON ({exc}); "
                            "is the base URL an OpenAI-compatible API?", kind="response", base_url=url)
        if isinstance(exc, LLMError):
            return exc
        return LLMError(f"request to {url} failed: {type(exc).__name__}: {exc}", kind="response", base_url=url)


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _level_of(response_format: dict | None) -> int:
    if response_format is None:
        return _FORMAT_LEVELS.index(None)
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("json_schema", "json_object"):
        raise LLMConfigError(f"response_format: expected None, {{'type': 'json_object'}} or json_schema_format(...), "
                             f"got {response_format!r}")
    return _FORMAT_LEVELS.index(kind)


def _format_at(response_format: dict | None, level: int) -> dict | None:
    kind = _FORMAT_LEVELS[level]
    if kind is None:
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    return response_format


def _number(value, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LLMConfigError(f"{name}: expected a number, got {value!r}") from None
    if not low <= number <= high:
        raise LLMConfigError(f"{name}: must be between {low:g} and {high:g}, got {value!r}")
    return number


def _server_message(exc) -> str:
    """The server's error message (plain text, one line, at most 300 characters)."""
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    if not message:
        response = getattr(exc, "response", None)
        message = (getattr(response, "text", "") if response is not None else "") or str(exc)
    flat = " ".join(str(message).split())
    return flat if len(flat) <= 300 else flat[:300] + "..."


def _snippet(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_MAX_RETRIES", "DEFAULT_IMAGE_MAX_SIDE", "DEFAULT_IMAGE_MAX_BYTES",
           "ChatClient", "LLMError", "LLMConfigError", "image_to_data_url", "json_schema_format"]
