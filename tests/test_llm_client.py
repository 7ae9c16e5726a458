"""The OpenAI-compatible chat client (engines/llm_client.py) and its key lookup (engines/llm_keys.py),
through the real ``openai`` SDK against the local stub server (tests/openai_stub.py)."""

import base64
import io
import socket

import numpy as np
import pytest
from PIL import Image

from agentic_edit.engines.llm_client import ChatClient, LLMConfigError, LLMError, image_to_data_url, json_schema_format
from agentic_edit.engines.llm_keys import (ENV_CONFIG, ENV_KEY, ENV_OPENAI_KEY, LOCAL_PLACEHOLDER_KEY, config_path,
                                           is_local_url, resolve_api_key)
from tests.openai_stub import OpenAIStub

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    """No key in the environment and an empty config home, whatever the machine has."""
    for name in (ENV_KEY, ENV_OPENAI_KEY, ENV_CONFIG):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))


def write_config(tmp_path, monkeypatch, text):
    path = tmp_path / "agentic.toml"
    path.write_text(text)
    monkeypatch.setenv(ENV_CONFIG, str(path))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def decode(url: str) -> Image.Image:
    header, data = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ---- keys -----------------------------------------------------------------------------------------

def test_key_from_this_packs_env_var_is_sent_as_bearer(openai_stub, monkeypatch):
    monkeypatch.setenv(ENV_KEY, "sk-pack")
    monkeypatch.setenv(ENV_OPENAI_KEY, "sk-openai")  # the pack's own variable wins
    openai_stub.reply("hello")
    client = ChatClient(openai_stub.base_url, "stub-vlm", max_retries=0)
    assert client.complete(HELLO) == "hello"
    request = openai_stub.chat_requests[0]
    assert request.bearer == "sk-pack"
    assert request.json["model"] == "stub-vlm" and request.json["messages"] == HELLO
    assert "sk-pack" not in repr(client) and ENV_KEY in repr(client)


def test_openai_env_var_is_sent_to_openai_only(openai_stub, monkeypatch):
    monkeypatch.setenv(ENV_OPENAI_KEY, "sk-openai")
    assert resolve_api_key("https://api.openai.com/v1").value == "sk-openai"
    assert resolve_api_key("https://api.groq.com/openai/v1") is None  # an OpenAI key never leaves for another host
    openai_stub.reply("hi")
    ChatClient(openai_stub.base_url, "m", max_retries=0).complete(HELLO)
    assert openai_stub.chat_requests[0].bearer != "sk-openai"


def test_key_from_config_file(openai_stub, monkeypatch, tmp_path):
    write_config(tmp_path, monkeypatch, '[llm]\napi_key = "sk-from-file"\n')
    openai_stub.reply("hi")
    client = ChatClient(openai_stub.base_url, "m", max_retries=0)
    client.complete(HELLO)
    assert openai_stub.chat_requests[0].bearer == "sk-from-file"
    assert "agentic.toml" in client.key.source


def test_per_url_key_beats_generic_keys_and_host_keys_match(openai_stub, monkeypatch, tmp_path):
    write_config(tmp_path, monkeypatch, (
        '[llm]\napi_key = "sk-generic"\n[llm.keys]\n'
        f'"{openai_stub.base_url}/" = "sk-this-url"\n'
        '"api.groq.com" = "gsk-host"\n'))
    monkeypatch.setenv(ENV_OPENAI_KEY, "sk-openai")  # a URL's own key is more specific than OPENAI_API_KEY
    openai_stub.reply("hi")
    ChatClient(openai_stub.base_url, "m", max_retries=0).complete(HELLO)
    assert openai_stub.chat_requests[0].bearer == "sk-this-url"
    assert resolve_api_key("https://API.groq.com/openai/v1").value == "gsk-host"
    assert resolve_api_key("https://api.openai.com/v1").value == "sk-openai"
    assert resolve_api_key("https://api.other.com/v1").value == "sk-generic"


def test_config_home_default_location(monkeypatch, tmp_path):
    home = tmp_path / "config-home"
    (home / "agentic-edit").mkdir(parents=True)
    (home / "agentic-edit" / "config.toml").write_text('[llm]\napi_key = "sk-home"\n')
    assert config_path() == home / "agentic-edit" / "config.toml"
    assert ChatClient("https://api.openai.com/v1", "gpt-4o-mini").key.value == "sk-home"


def test_no_key_for_a_remote_server_is_a_clear_error():
    with pytest.raises(LLMConfigError) as caught:
        ChatClient("https://api.openai.com/v1", "gpt-4o-mini")
    message = str(caught.value)
    assert caught.value.kind == "config" and isinstance(caught.value, ValueError)
    assert ENV_KEY in message and ENV_OPENAI_KEY in message and str(config_path()) in message
    assert "https://api.openai.com/v1" in message


def test_local_server_needs_no_key(openai_stub):
    openai_stub.reply("hi")
    client = ChatClient(openai_stub.base_url, "llava", max_retries=0)
    assert client.complete(HELLO) == "hi"
    assert openai_stub.chat_requests[0].bearer == LOCAL_PLACEHOLDER_KEY


@pytest.mark.parametrize("url, local", [
    ("http://localhost:11434/v1", True), ("http://127.0.0.1:1234/v1", True), ("http://[::1]:8000/v1", True),
    ("http://192.168.1.20:11434/v1", True), ("http://10.0.0.5/v1", True), ("http://ollama.localhost/v1", True),
    ("https://api.openai.com/v1", False), ("http://8.8.8.8/v1", False), ("http://myserver.lan/v1", False),
])
def test_which_servers_count_as_local(url, local):
    assert is_local_url(url) is local


@pytest.mark.parametrize("url", ["", "api.openai.com/v1", "ftp://host/v1", "http:///v1", 42])
def test_base_url_must_be_http(url):
    with pytest.raises(LLMConfigError, match="base_url"):
        ChatClient(url, "m")


def test_broken_config_file_names_the_file(monkeypatch, tmp_path):
    path = write_config(tmp_path, monkeypatch, "[llm\napi_key = ")
    with pytest.raises(LLMConfigError, match="not valid TOML") as caught:
        ChatClient("https://api.openai.com/v1", "m")
    assert str(path) in str(caught.value)
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "missing.toml"))
    with pytest.raises(LLMConfigError, match="missing.toml"):
        ChatClient("https://api.openai.com/v1", "m")


def test_settings_are_checked():
    with pytest.raises(LLMConfigError, match="model"):
        ChatClient("http://127.0.0.1:1/v1", " ")
    with pytest.raises(LLMConfigError, match="temperature"):
        ChatClient("http://127.0.0.1:1/v1", "m", temperature=5)
    with pytest.raises(LLMConfigError, match="max_retries"):
        ChatClient("http://127.0.0.1:1/v1", "m", max_retries=-1)
    with pytest.raises(LLMConfigError, match="image_max_side"):
        ChatClient("http://127.0.0.1:1/v1", "m", image_max_side=0)
    with pytest.raises(LLMConfigError, match="max_tokens"):
        ChatClient("http://127.0.0.1:1/v1", "m").complete(HELLO, max_tokens=0)


# ---- images ---------------------------------------------------------------------------------------

def test_images_go_as_downscaled_data_urls_in_placeholder_order(openai_stub):
    openai_stub.reply("ok")
    client = ChatClient(openai_stub.base_url, "m", max_retries=0, image_max_side=64)
    red = np.zeros((100, 200, 3), np.float32)
    red[..., 0] = 1
    blue = np.zeros((30, 20, 3), np.float32)
    blue[..., 2] = 1
    messages = [{"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image"},
                                             {"type": "text", "text": "second"}, {"type": "image"}]}]
    client.complete(messages, images=[red, blue])
    request = openai_stub.chat_requests[0]
    parts = request.json["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url"]
    first, second = (decode(u).convert("RGB") for u in request.image_urls())
    assert first.size == (64, 32) and second.size == (20, 30)  # shrunk to the cap, never enlarged
    assert np.asarray(first)[..., 0].mean() > 240 and np.asarray(second)[..., 2].mean() > 240


def test_images_without_placeholders_go_before_the_first_user_text(openai_stub):
    openai_stub.reply("ok")
    client = ChatClient(openai_stub.base_url, "m", max_retries=0, image_format="png")
    client.complete([{"role": "system", "content": "sys"}, {"role": "user", "content": "what is this?"}],
                    images=[np.full((8, 8, 3), 0.5, np.float32)])
    user = openai_stub.chat_requests[0].json["messages"][1]
    assert [p["type"] for p in user["content"]] == ["image_url", "text"]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert decode(user["content"][0]["image_url"]["url"]).size == (8, 8)


def test_image_byte_cap_shrinks_until_it_fits():
    noise = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
    capped = image_to_data_url(noise, max_side=512, image_format="png", max_bytes=120_000)
    assert len(capped.split(",", 1)[1]) <= 120_000
    assert max(decode(capped).size) < 512


def test_image_and_placeholder_counts_must_match():
    client = ChatClient("http://127.0.0.1:1/v1", "m")
    with pytest.raises(LLMConfigError, match="placeholder"):
        client.build_messages([{"role": "user", "content": [{"type": "image"}]}], images=[])
    with pytest.raises(LLMConfigError, match="placeholder"):
        client.build_messages([{"role": "user", "content": [{"type": "image"}]}], images=[np.zeros((4, 4, 3))] * 2)


# ---- structured output ----------------------------------------------------------------------------

def test_rejected_json_schema_degrades_and_is_remembered(openai_stub):
    schema = json_schema_format("answer", {"type": "object", "properties": {"a": {"type": "integer"}}})
    openai_stub.error(400, "response_format json_schema is not supported")
    openai_stub.error(400, "'response_format.type' must be 'json_schema' or 'text'")
    openai_stub.reply('{"a": 1}')
    openai_stub.reply('{"a": 2}')
    client = ChatClient(openai_stub.base_url, "m", max_retries=0)
    assert client.complete(HELLO, response_format=schema) == '{"a": 1}'
    assert client.complete(HELLO, response_format=schema) == '{"a": 2}'
    sent = [r.json.get("response_format") for r in openai_stub.chat_requests]
    assert sent == [schema, {"type": "json_object"}, None, None]


def test_a_400_without_response_format_is_not_retried(openai_stub):
    openai_stub.error(400, "model does not support images")
    with pytest.raises(LLMError, match="model does not support images") as caught:
        ChatClient(openai_stub.base_url, "m", max_retries=0).complete(HELLO)
    assert caught.value.status == 400 and len(openai_stub.chat_requests) == 1


def test_refused_temperature_and_max_tokens_are_adapted_once(openai_stub):
    # What OpenAI's reasoning models answer to a chat-model request.
    openai_stub.error(400, "Unsupported value: 'temperature' does not support 0.2 with this model. "
                           "Only the default (1) value is supported.")
    openai_stub.error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                           "Use 'max_completion_tokens' instead.")
    openai_stub.reply("first").reply("second")
    client = ChatClient(openai_stub.base_url, "o-model", max_retries=0)
    assert client.complete(HELLO, max_tokens=50) == "first"
    assert client.complete(HELLO, max_tokens=60) == "second"
    bodies = [r.json for r in openai_stub.chat_requests]
    assert [b.get("temperature") for b in bodies] == [0.2, None, None, None]
    assert [b.get("max_tokens") for b in bodies] == [50, 50, None, None]
    assert [b.get("max_completion_tokens") for b in bodies] == [None, None, 50, 60]


def test_no_temperature_sends_none(openai_stub):
    openai_stub.reply("ok")
    ChatClient(openai_stub.base_url, "m", temperature=None, max_retries=0).complete(HELLO)
    assert "temperature" not in openai_stub.chat_requests[0].json


# ---- failures -------------------------------------------------------------------------------------

def test_http_500_names_the_server(openai_stub):
    openai_stub.error(500, "the GPU caught fire")
    with pytest.raises(LLMError) as caught:
        ChatClient(openai_stub.base_url, "m", max_retries=0).complete(HELLO)
    error = caught.value
    assert error.kind == "http" and error.status == 500 and error.base_url == openai_stub.base_url
    assert openai_stub.base_url in str(error) and "the GPU caught fire" in str(error)
    assert error.detail == "the GPU caught fire"


def test_retries_follow_retry_after(openai_stub):
    openai_stub.error(503, "busy", headers={"retry-after-ms": "10"})
    openai_stub.reply("second time lucky")
    assert ChatClient(openai_stub.base_url, "m", max_retries=1).complete(HELLO) == "second time lucky"
    assert len(openai_stub.chat_requests) == 2


def test_refused_key_says_where_it_came_from(openai_stub, monkeypatch):
    monkeypatch.setenv(ENV_KEY, "sk-wrong")
    openai_stub.error(401, "Incorrect API key provided", error_type="invalid_request_error")
    with pytest.raises(LLMError) as caught:
        ChatClient(openai_stub.base_url, "m", max_retries=0).complete(HELLO)
    assert caught.value.status == 401 and ENV_KEY in str(caught.value) and "sk-wrong" not in str(caught.value)


def test_timeout(openai_stub):
    openai_stub.delay(3).reply("too late")
    with pytest.raises(LLMError, match="did not answer within 0.3 s") as caught:
        ChatClient(openai_stub.base_url, "m", timeout=0.3, max_retries=0).complete(HELLO)
    assert caught.value.kind == "timeout"


def test_server_down():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(LLMError, match="could not connect") as caught:
        ChatClient(url, "m", max_retries=0, timeout=2).complete(HELLO)
    assert caught.value.kind == "connection" and url in str(caught.value)


@pytest.mark.parametrize("body, content_type, expected", [
    ("<html>Welcome to nginx</html>", "text/html", "did not answer with JSON"),
    ('{"choices": [{"message": ', "application/json", "not valid JSON"),
    ('{"status": "ok"}', "application/json", "not a chat completion"),
])
def test_bodies_that_are_not_chat_completions(openai_stub, body, content_type, expected):
    openai_stub.raw(body, content_type=content_type)
    with pytest.raises(LLMError, match=expected) as caught:
        ChatClient(openai_stub.base_url, "m", max_retries=0).complete(HELLO)
    assert caught.value.kind == "response" and openai_stub.base_url in str(caught.value)


def test_empty_reply_and_refusal(openai_stub):
    client = ChatClient(openai_stub.base_url, "m", max_retries=0)
    openai_stub.reply(None, finish_reason="length")
    with pytest.raises(LLMError, match="finish_reason=length"):
        client.complete(HELLO)
    openai_stub.reply(None, refusal="I can't help with that")
    with pytest.raises(LLMError, match="refused: I can't help with that"):
        client.complete(HELLO)


def test_list_models(openai_stub):
    openai_stub.models = ["qwen2.5vl:7b", "llava:13b"]
    assert ChatClient(openai_stub.base_url, "m").list_models() == ["qwen2.5vl:7b", "llava:13b"]
    assert openai_stub.requests[-1].method == "GET"


def test_stub_answers_500_when_nothing_is_queued():
    with OpenAIStub() as stub:
        with pytest.raises(LLMError, match="no recorded answer queued"):
            ChatClient(stub.base_url, "m", max_retries=0).complete(HELLO)
