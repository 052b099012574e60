"""OAuth access tokens that expire (2 hours), pinned from both sides: with a refresh token the client refreshes once
and every tool still answers; without one, the error says the token expired and how to get a new one. The
sandbox's token endpoint and its request log show what reached Optimizely; its clock is a fake one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from opt_mcp.api.client import OptimizelyClient, TokenAuth
from opt_mcp.api.errors import OptimizelyError
from opt_mcp.api.oauth import DEFAULT_TOKEN_URL, OAuthCredentials
from opt_mcp.api.ratelimit import RateLimits
from opt_mcp.config import Settings
from opt_mcp.doctor import diagnose
from opt_mcp.logs import JsonLines
from opt_mcp.sandbox import (
    SANDBOX_TOKEN_URL,
    SEED_PROJECT_ID,
    Readings,
    RequestRecord,
    Sandbox,
    SandboxConfig,
    SandboxLimits,
    SandboxOAuth,
)
from opt_mcp.sandboxed import sandbox_client
from opt_mcp.server import build_server
from opt_mcp.settings import ConfigError
from tests.conftest import FAST_RETRY, SleepRecorder
from tests.helpers import data, stdio_exchange, text

pytestmark = pytest.mark.anyio
PID = SEED_PROJECT_ID
MODES = ["auto", "legacy"]
ACCESS = "oauth-access-Kq93-never-shown"
REFRESH = "oauth-refresh-Vb27-never-shown"
CLIENT_ID = "opt-mcp-test-app"
CLIENT_SECRET = "oauth-secret-Hx55-never-shown"
CREDENTIALS = OAuthCredentials(refresh_token=REFRESH, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
LIFETIME = 7200
DESCRIBE = {"flag_key": "product_sort", "operations": [{"op": "replace", "path": "/description", "value": "Sorted"}]}
BODIES = ["silent", "says_expired"]


class Clock:
    """The sandbox's clock, moved by hand: its access tokens expire on it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def oauth_sandbox(clock: Clock, *, access: str | None = ACCESS, **readings: Any) -> Sandbox:
    """An account whose OAuth app authorised opt-mcp: ACCESS (if any) is valid for LIFETIME from now."""
    oauth = SandboxOAuth(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH, access_token=access)
    config = SandboxConfig(rate_limits=SandboxLimits.unlimited(), readings=Readings(**readings), oauth=oauth)
    return Sandbox(config, clock=clock)


def make(sandbox: Sandbox, *, token: str | None = ACCESS, oauth: OAuthCredentials | None = CREDENTIALS) -> Any:
    # A configured token against the sandbox: forced, as `opt-mcp serve --sandbox` does. No results cache, so that
    # every get_results reaches the API.
    settings = Settings(token=token, oauth=oauth, force_sandbox=True, results_cache_seconds=0)
    return build_server(settings, sandbox=sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY)


def refreshes(sandbox: Sandbox) -> list[RequestRecord]:
    return sandbox.requests("POST", r"^/oauth2/token$")


def refused(sandbox: Sandbox) -> list[RequestRecord]:
    return [r for r in sandbox.requests() if r.status == 401]


def patches(sandbox: Sandbox) -> list[int]:
    return [r.status for r in sandbox.requests("PATCH")]


class Approves:
    """A user who approves every preview; ``meanwhile`` runs before the answer (the time the user takes)."""

    def __init__(self, meanwhile: Any = None) -> None:
        self.meanwhile = meanwhile
        self.shown: list[str] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.shown.append(params.message)
        if self.meanwhile is not None:
            self.meanwhile()
        return ElicitResult(action="accept", content={"confirm": True})


READS: list[tuple[str, dict[str, Any]]] = [
    ("list_projects", {}),
    ("list_environments", {}),
    ("list_flags", {}),
    ("get_flag", {"flag_key": "homepage_hero"}),
]
RESULTS = ("get_results", {"flag_key": "product_sort", "environment": "production"})


# ------------------------------------------------------------------------------------------------------------------
# With a refresh token: refreshed once, every tool still answers
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", BODIES)
async def test_a_token_that_expires_mid_session_is_refreshed_once_and_every_tool_still_answers(
    mode: str, body: str
) -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock, expiry_body=body)
    # The token expires while the user reads the preview: the write's re-read before sending meets the expiry.
    user = Approves(meanwhile=lambda: clock.advance(LIFETIME + 1))
    async with Client(make(sandbox), mode=mode, elicitation_callback=user) as c:
        before = [data(await c.call_tool(name, arguments)) for name, arguments in READS]
        results_before = data(await c.call_tool(*RESULTS))
        assert refreshes(sandbox) == [] and refused(sandbox) == []
        written = data(await c.call_tool("patch_flag", DESCRIBE))
        after = [data(await c.call_tool(name, arguments)) for name, arguments in READS]
        results_after = data(await c.call_tool(*RESULTS))
        shown = data(await c.call_tool("get_flag", {"flag_key": "product_sort"}))
    assert written["status"] == "written" and written["revisions"] == {"product_sort": 4} and len(user.shown) == 1
    assert shown["description"] == "Sorted"
    # The same answers as before the expiry (list_flags: the same flags; one of them has a new description).
    flags_before, flags_after = before.pop(2), after.pop(2)
    assert after == before
    assert [f["key"] for f in flags_after["flags"]] == [f["key"] for f in flags_before["flags"]]
    assert results_after["experiment_id"] == results_before["experiment_id"]
    # Exactly one refresh, one refused request (the re-read the expiry met), and the write sent once.
    assert len(refreshes(sandbox)) == 1 and refreshes(sandbox)[0].status == 200
    assert [(r.method, r.status) for r in refused(sandbox)] == [("GET", 401)]
    assert patches(sandbox) == [200]


async def test_a_write_refused_with_a_401_is_sent_again_once_and_applied_once() -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    # Refused before it was processed, as a request with an expired token is: nothing was applied.
    sandbox.inject("status", path="/flags$", method="PATCH", status=401)
    async with Client(make(sandbox)) as c:  # the confirmation-token path
        preview = data(await c.call_tool("patch_flag", DESCRIBE))
        done = data(await c.call_tool("patch_flag", {**DESCRIBE, "confirmation_token": preview["confirmation_token"]}))
    assert done["status"] == "written" and done["revisions"] == {"product_sort": 4}  # one revision: applied once
    assert patches(sandbox) == [401, 200] and len(refreshes(sandbox)) == 1
    assert sandbox.store.projects[PID].flags["product_sort"].fields["description"] == "Sorted"


@pytest.mark.parametrize("rotation", ["rotates", "keeps"])
async def test_a_known_expiry_is_refreshed_before_sending_and_a_rotated_refresh_token_is_kept(rotation: str) -> None:
    clock, time = Clock(), SleepRecorder()
    sandbox = oauth_sandbox(clock, access=None, refresh_rotation=rotation)
    async with sandbox_client(
        sandbox,
        None,
        oauth=CREDENTIALS,
        rate_limits=RateLimits.unlimited(),
        retry=FAST_RETRY,
        sleep=time,
        clock=time.clock,
    ) as client:
        for _ in range(3):  # the first fetches a token; then, each time both clocks pass its lifetime, a new one
            assert (await client.get_flag(PID, "product_sort")).key == "product_sort"
            assert (await client.get_flag(PID, "homepage_hero")).key == "homepage_hero"
            clock.advance(LIFETIME)
            time.now += LIFETIME
    calls = [(r.method, r.path, r.status) for r in sandbox.requests()]
    token = ("POST", "/oauth2/token", 200)
    read = [("GET", f"/flags/v1/projects/{PID}/flags/{key}", 200) for key in ("product_sort", "homepage_hero")]
    assert calls == [token, *read] * 3  # never refused: each refresh came before the expiry it would have met
    # "rotates": the refresh token answered replaced the one used, which the sandbox refuses from then on.
    assert all(r.body.startswith(b"grant_type=refresh_token&refresh_token=***&") for r in refreshes(sandbox))


async def test_concurrent_calls_after_an_expiry_refresh_once() -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    # The refresh takes a while (in process, nothing else would run while it is under way): the others meet it.
    sandbox.inject("latency", path="^/oauth2/token$", delay=0.05)
    answers: list[CallToolResult] = []
    async with Client(make(sandbox)) as c:
        await c.call_tool("list_flags", {})
        clock.advance(LIFETIME + 1)

        async def call(name: str, arguments: dict[str, Any]) -> None:
            answers.append(await c.call_tool(name, arguments))

        async with anyio.create_task_group() as group:
            for name, arguments in READS * 2:
                group.start_soon(call, name, arguments)
    assert len(answers) == 8 and not any(a.is_error for a in answers)
    assert len(refreshes(sandbox)) == 1  # the others waited for it, or found it done and sent again
    assert 1 <= len(refused(sandbox)) <= 8


async def test_concurrent_first_calls_fetch_one_token_and_clients_sharing_an_auth_refresh_once() -> None:
    clock, time = Clock(), SleepRecorder()
    sandbox = oauth_sandbox(clock, access=None)  # refresh token only: the first calls fetch the access token
    sandbox.inject("latency", path="^/oauth2/token$", delay=0.05, times=2)  # each refresh is under way a while
    auth = TokenAuth(None, oauth=replace(CREDENTIALS, token_url=SANDBOX_TOKEN_URL), clock=time.clock)
    one = sandbox_client(sandbox, auth, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY)
    two = sandbox_client(sandbox, auth, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY)
    async with one, two:
        flags = await anyio_gather([one.get_flag(PID, "product_sort") for _ in range(4)] + [two.list_projects()])
        clock.advance(LIFETIME)
        time.now += LIFETIME
        await anyio_gather([one.list_projects(), two.list_projects(), two.get_flag(PID, "homepage_hero")])
    assert len(flags) == 5 and auth.refreshes == 2 and len(refreshes(sandbox)) == 2  # once each time, for both
    assert refused(sandbox) == [] and one.owner == two.owner


async def anyio_gather(calls: list[Any]) -> list[Any]:
    done: list[Any] = []

    async def run(call: Any) -> None:
        done.append(await call)

    async with anyio.create_task_group() as group:
        for call in calls:
            group.start_soon(run, call)
    return done


async def test_a_403_to_the_configured_token_is_refreshed_once_and_a_403_after_is_a_real_permission_problem() -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    # Optimizely may answer an expired token with a 403: the configured token's age is unknown, so it is refreshed.
    sandbox.inject("status", path="/flags/homepage_hero$", status=403)
    sandbox.inject("status", path="/flags/product_sort$", status=403, times=None)  # a real lack of permission
    async with Client(make(sandbox)) as c:
        hero = await c.call_tool("get_flag", {"flag_key": "homepage_hero"})
        sort = await c.call_tool("get_flag", {"flag_key": "product_sort"})
    assert not hero.is_error and len(refreshes(sandbox)) == 1  # refreshed, sent again, answered
    message = text(sort)
    assert sort.is_error and "HTTP 403" in message and "lacks permission" in message
    assert "expired" not in message and len(refreshes(sandbox)) == 1  # a refreshed token is not refreshed for a 403


async def test_the_hosted_servers_shared_token_is_refreshed() -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock, access=None)
    settings = Settings(oauth=CREDENTIALS, force_sandbox=True)
    server = build_server(settings, sandbox=sandbox, rate_limits=RateLimits.unlimited(), retry=FAST_RETRY, people={})
    async with Client(server) as c:  # no header: the operator's credentials
        first = await c.call_tool("list_flags", {})
        clock.advance(LIFETIME + 1)
        second = await c.call_tool("list_flags", {})
    assert data(first) == data(second) and len(refreshes(sandbox)) == 2
    assert server.people is not None
    await server.people.aclose()


# ------------------------------------------------------------------------------------------------------------------
# Without a refresh token, and when the refresh fails
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", BODIES)
async def test_without_a_refresh_token_the_error_says_the_token_expired_and_how_to_get_a_new_one(
    mode: str, body: str
) -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock, expiry_body=body)
    async with Client(make(sandbox, oauth=None), mode=mode) as c:
        assert not (await c.call_tool("get_flag", {"flag_key": "product_sort"})).is_error
        clock.advance(LIFETIME + 1)
        result = await c.call_tool("get_flag", {"flag_key": "product_sort"})
        write = await c.call_tool("archive_flags", {"flag_keys": ["product_sort"]})
    for refusal in (result, write):
        message = text(refusal)
        assert refusal.is_error and "HTTP 401" in message and "expired or revoked" in message
        assert "lasts 2 hours" in message and "Profile > API Access" in message
        assert "OPTIMIZELY_REFRESH_TOKEN" in message and "OPTIMIZELY_OAUTH_CLIENT_SECRET" in message
        assert "lacks permission" not in message
    assert refreshes(sandbox) == [] and [r.method for r in sandbox.requests() if r.method != "GET"] == []


@pytest.mark.parametrize(
    ("oauth", "says", "names"),
    [
        (replace(CREDENTIALS, refresh_token="revoked-refresh-token"), "invalid_grant", "OPTIMIZELY_REFRESH_TOKEN"),
        (replace(CREDENTIALS, client_secret="not-the-app-secret"), "invalid_client", "OPTIMIZELY_OAUTH_CLIENT_SECRET"),
    ],
)
async def test_a_refused_refresh_is_a_clear_error_and_writes_nothing(
    oauth: OAuthCredentials, says: str, names: str
) -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    async with Client(make(sandbox, oauth=oauth), elicitation_callback=Approves()) as c:
        clock.advance(LIFETIME + 1)
        read = await c.call_tool("get_flag", {"flag_key": "product_sort"})
        write = await c.call_tool("patch_flag", DESCRIBE)
    for result in (read, write):
        message = text(result)
        assert result.is_error and "POST /oauth2/token" in message and says in message and names in message
        assert "not applied" in message
        assert all(secret not in message for secret in (*sandbox.oauth.tokens, oauth.refresh_token, CLIENT_SECRET))
    expected = 401 if says == "invalid_client" else 400
    assert [r.status for r in refreshes(sandbox)] == [expected] * 2  # tried again on the next call, not in a loop
    assert patches(sandbox) == []


async def test_a_rotated_refresh_token_used_twice_is_refused_with_what_to_do() -> None:
    # Another process refreshed with the same refresh token first: Optimizely rotated it, so this one is used up.
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    async with sandbox_client(sandbox, ACCESS, oauth=CREDENTIALS, retry=FAST_RETRY) as other:
        clock.advance(LIFETIME + 1)
        await other.list_projects()
    async with Client(make(sandbox)) as c:
        result = await c.call_tool("list_projects", {})
    assert result.is_error and "invalid_grant" in text(result) and "no two servers may share one" in text(result)


async def test_a_failing_token_endpoint_is_retried_on_the_next_call() -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    sandbox.inject("status", path="^/oauth2/token$", status=503)
    async with Client(make(sandbox)) as c:
        clock.advance(LIFETIME + 1)
        failed = await c.call_tool("list_flags", {})
        worked = await c.call_tool("list_flags", {})
    assert failed.is_error and "token endpoint failed" in text(failed) and "try again in a minute" in text(failed)
    assert not worked.is_error and [r.status for r in refreshes(sandbox)] == [503, 200]


async def test_a_token_refused_right_after_a_refresh_says_to_re_authorise() -> None:
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    sandbox.inject("status", path="/flags/product_sort$", status=401, times=None)  # the app's access was revoked
    async with Client(make(sandbox)) as c:
        result = await c.call_tool("get_flag", {"flag_key": "product_sort"})
    assert result.is_error and "just refreshed" in text(result) and "Re-authorise" in text(result)
    assert len(refreshes(sandbox)) == 1 and len(refused(sandbox)) == 2  # refreshed and sent again once, no loop


async def test_an_unusable_token_answer_is_an_error() -> None:
    sandbox = oauth_sandbox(Clock(), access=None)
    sandbox.inject("status", path="^/oauth2/token$", status=200, body=b'{"token_type": "mac", "access_token": "x"}')
    async with sandbox_client(sandbox, None, oauth=CREDENTIALS, retry=FAST_RETRY) as client:
        with pytest.raises(OptimizelyError) as raised:
            await client.list_projects()
    assert "no usable bearer access token" in str(raised.value) and "OPTIMIZELY_OAUTH_TOKEN_URL" in str(raised.value)
    assert sandbox.requests("GET") == []


# ------------------------------------------------------------------------------------------------------------------
# Neither token ever shown
# ------------------------------------------------------------------------------------------------------------------


async def test_neither_token_appears_in_a_result_an_error_the_log_or_the_request_log(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    sandbox = oauth_sandbox(clock)
    # Optimizely's text echoing a token (it must be masked), an error page, a refused refresh.
    echo = json.dumps({"title": "Bad", "detail": f"token {ACCESS} / {REFRESH} is not allowed", "status": 400})
    sandbox.inject("status", path="/flags/homepage_hero$", status=400, body=echo.encode())
    said: list[str] = []
    async with Client(make(sandbox), elicitation_callback=Approves(lambda: clock.advance(LIFETIME + 1))) as c:
        for name, arguments in [*READS, RESULTS, ("patch_flag", DESCRIBE), *READS]:
            result = await c.call_tool(name, arguments)
            said += [text(result), json.dumps(result.structured_content)]
        rotated = sandbox.oauth.tokens[-1]  # the refresh token now in use: echoed, it is masked too
        sandbox.inject("status", path="/flags/product_sort$", status=400, body=echo.replace(ACCESS, rotated).encode())
        said.append(text(await c.call_tool("get_flag", {"flag_key": "product_sort"})))
    async with Client(make(sandbox, oauth=replace(CREDENTIALS, refresh_token="wrong"))) as c:
        clock.advance(LIFETIME + 1)
        said.append(text(await c.call_tool("list_flags", {})))
    assert len(refreshes(sandbox)) == 2
    assert "***" in said[6]  # get_flag homepage_hero: the echoed tokens were masked, not dropped
    formatter = JsonLines()
    logged = [formatter.format(record) for record in caplog.records]
    requests = [json.dumps({"q": r.query, "b": r.body.decode()}) for r in sandbox.requests()]
    settings = Settings(token=ACCESS, oauth=CREDENTIALS)
    shown = [repr(settings), repr(CREDENTIALS), repr(TokenAuth(ACCESS, oauth=CREDENTIALS)), repr(sandbox.config)]
    out, err = capfd.readouterr()
    everything = "\n".join([*said, *logged, *requests, *shown, out, err])
    secrets = {*sandbox.oauth.tokens, CLIENT_SECRET}
    assert len(secrets) == 5  # the configured pair, the pair one refresh issued, the client secret
    assert {secret: everything.count(secret) for secret in secrets} == dict.fromkeys(secrets, 0)


@pytest.mark.slow
def test_a_stdio_server_with_only_a_refresh_token_fetches_one_and_shows_neither(served_sandbox: str) -> None:
    env = {
        "OPTIMIZELY_REFRESH_TOKEN": REFRESH,
        "OPTIMIZELY_OAUTH_CLIENT_ID": CLIENT_ID,
        "OPTIMIZELY_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "OPTIMIZELY_OAUTH_TOKEN_URL": f"{served_sandbox}/oauth2/token",
        "OPTIMIZELY_API_BASE_URL": served_sandbox,
        "OPTIMIZELY_PROJECT_ID": str(PID),
        "OPT_MCP_CONFIRM": "token",
        "OPT_MCP_LOG_FORMAT": "json",
    }
    toggle = {"flag_key": "product_sort", "environment": "development", "enabled": True}

    def confirmed(answers: list[dict[str, Any]]) -> dict[str, Any]:
        return {**toggle, "confirmation_token": answers[-1]["structuredContent"]["confirmation_token"]}

    calls: list[tuple[str, Any]] = [
        ("list_projects", {}),
        ("list_flags", {}),
        ("get_flag", {"flag_key": "product_sort"}),
        ("set_flag_enabled", toggle),
        ("set_flag_enabled", confirmed),
    ]
    answers, stderr = stdio_exchange(env, calls)
    assert not any(a.get("isError") for a in answers) and answers[-1]["structuredContent"]["status"] == "written"
    seen = httpx.get(f"{served_sandbox}/_sandbox/requests").json()
    tokens = [r for r in seen if r["path"] == "/oauth2/token"]
    assert len(tokens) == 1 and tokens[0]["status"] == 200 and "client_secret=***" in tokens[0]["body"]
    everything = json.dumps(answers) + stderr + json.dumps(seen)
    # The served sandbox issues tokens this test never learns: they all start so.
    for secret in (REFRESH, CLIENT_SECRET, "sandbox-access-", "sandbox-refresh-"):
        assert secret not in everything
    assert "Traceback" not in stderr


# ------------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------------

OAUTH_ENV = {
    "OPTIMIZELY_REFRESH_TOKEN": REFRESH,
    "OPTIMIZELY_OAUTH_CLIENT_ID": CLIENT_ID,
    "OPTIMIZELY_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
}


def test_a_refresh_token_with_its_app_is_read_and_counts_as_a_token() -> None:
    settings = Settings.from_env(OAUTH_ENV)
    assert settings.oauth == CREDENTIALS and settings.oauth.token_url == DEFAULT_TOKEN_URL
    assert settings.token is None and settings.has_token and not settings.uses_sandbox
    assert Settings.from_env({**OAUTH_ENV, "OPT_MCP_SANDBOX": "false"}).oauth == CREDENTIALS
    custom = Settings.from_env({**OAUTH_ENV, "OPTIMIZELY_OAUTH_TOKEN_URL": "http://127.0.0.1:9/oauth2/token"})
    assert custom.oauth is not None and custom.oauth.token_url == "http://127.0.0.1:9/oauth2/token"
    assert Settings.from_env({}).oauth is None and Settings.from_env({}).uses_sandbox
    assert REFRESH not in repr(settings) and CLIENT_SECRET not in repr(settings) and CLIENT_ID in repr(settings)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"OPTIMIZELY_REFRESH_TOKEN": REFRESH},
            "OPTIMIZELY_REFRESH_TOKEN needs OPTIMIZELY_OAUTH_CLIENT_ID and OPTIMIZELY_OAUTH_CLIENT_SECRET",
        ),
        (
            {**OAUTH_ENV, "OPTIMIZELY_OAUTH_CLIENT_SECRET": " "},
            "OPTIMIZELY_REFRESH_TOKEN needs OPTIMIZELY_OAUTH_CLIENT_SECRET (your OAuth app's credentials",
        ),
        (
            {"OPTIMIZELY_OAUTH_CLIENT_ID": CLIENT_ID, "OPTIMIZELY_OAUTH_CLIENT_SECRET": CLIENT_SECRET},
            "OPTIMIZELY_OAUTH_CLIENT_ID and OPTIMIZELY_OAUTH_CLIENT_SECRET set without OPTIMIZELY_REFRESH_TOKEN",
        ),
        (
            {"OPTIMIZELY_OAUTH_TOKEN_URL": DEFAULT_TOKEN_URL},
            "OPTIMIZELY_OAUTH_TOKEN_URL set without OPTIMIZELY_REFRESH_TOKEN: set the refresh token",
        ),
        ({**OAUTH_ENV, "OPTIMIZELY_REFRESH_TOKEN": "two words"}, "OPTIMIZELY_REFRESH_TOKEN contains spaces"),
        (
            {**OAUTH_ENV, "OPTIMIZELY_OAUTH_TOKEN_URL": "ftp://app.optimizely.com/oauth2/token"},
            "OPTIMIZELY_OAUTH_TOKEN_URL must be an http(s) URL like https://app.optimizely.com/oauth2/token",
        ),
    ],
)
def test_half_an_oauth_configuration_is_one_clear_line(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert says in message and "\n" not in message
    assert REFRESH not in message and CLIENT_SECRET not in message


# ------------------------------------------------------------------------------------------------------------------
# The sandbox's token endpoint (RFC 6749 §5, §6) and the doctor
# ------------------------------------------------------------------------------------------------------------------


async def test_the_token_endpoint_answers_as_rfc_6749_says() -> None:
    sandbox = oauth_sandbox(Clock())
    async with httpx.AsyncClient(transport=sandbox.transport()) as http:

        async def post(form: dict[str, str], **options: Any) -> tuple[int, dict[str, Any], Any]:
            answer = await http.post(SANDBOX_TOKEN_URL, data=form, **options)
            return answer.status_code, answer.json(), answer.headers

        grant = {"grant_type": "refresh_token", "refresh_token": REFRESH, "client_id": CLIENT_ID}
        wrong = await post({**grant, "client_secret": "wrong"})
        unsupported = await post({**grant, "grant_type": "password", "client_secret": CLIENT_SECRET})
        basic = await post({"grant_type": "refresh_token", "refresh_token": REFRESH}, auth=(CLIENT_ID, CLIENT_SECRET))
        used = await post({**grant, "client_secret": CLIENT_SECRET})  # rotated by the answer before
        in_query = await http.post(SANDBOX_TOKEN_URL, params={**grant, "refresh_token": basic[1]["refresh_token"],
                                                              "client_secret": CLIENT_SECRET})  # fmt: skip
    assert wrong[:2] == (401, {"error": "invalid_client", "error_description": "Client authentication failed"})
    assert unsupported[0] == 400 and unsupported[1]["error"] == "unsupported_grant_type"
    status, answer, headers = basic
    assert status == 200 and set(answer) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert answer["token_type"] == "bearer" and answer["expires_in"] == LIFETIME
    assert headers["cache-control"] == "no-store" and headers["pragma"] == "no-cache"
    assert used[0] == 400 and used[1]["error"] == "invalid_grant"
    assert in_query.status_code == 200  # Optimizely's docs put the parameters in the query string: also accepted
    assert sandbox.oauth.check(answer["access_token"]) == "valid" and sandbox.oauth.check("nope") == "unknown"


async def test_the_doctor_fetches_a_token_and_never_prints_one() -> None:
    sandbox = oauth_sandbox(Clock(), access=None)
    settings = Settings(oauth=CREDENTIALS, project_id=PID)
    async with sandbox_client(sandbox, None, oauth=CREDENTIALS, rate_limits=RateLimits.unlimited()) as client:
        healthy = await diagnose(settings, client)
    revoked = replace(CREDENTIALS, refresh_token="revoked-Zz81")
    async with sandbox_client(sandbox, None, oauth=revoked, rate_limits=RateLimits.unlimited()) as client:
        refused_refresh = await diagnose(replace(settings, oauth=revoked), client)
    assert healthy.healthy and "refreshed with OPTIMIZELY_REFRESH_TOKEN" in healthy.checks[0].detail
    assert not refused_refresh.healthy and "invalid_grant" in refused_refresh.checks[-1].detail
    printed = "\n".join(healthy.lines() + refused_refresh.lines())
    assert all(secret not in printed for secret in (*sandbox.oauth.tokens, CLIENT_SECRET, "revoked-Zz81"))


async def test_a_client_needs_a_token_or_a_refresh_token() -> None:
    with pytest.raises(ValueError, match="OPTIMIZELY_API_TOKEN"):
        OptimizelyClient(None)
    with pytest.raises(ValueError, match="TokenAuth"):
        OptimizelyClient(TokenAuth(ACCESS), oauth=CREDENTIALS)


def _answered_by(answer: Callable[[httpx.Request], httpx.Response], token: str | None) -> OptimizelyClient:
    """A refreshing client whose every request (the token endpoint's too) ``answer`` answers."""
    return OptimizelyClient(
        token,
        oauth=replace(CREDENTIALS, token_url="https://auth.example.invalid/oauth2/token"),
        transport=httpx.MockTransport(answer),
        rate_limits=RateLimits.unlimited(),
        retry=FAST_RETRY,
    )


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_a_refresh_that_fails_in_transit_says_the_write_was_not_applied(
    failure: type[httpx.TransportError],
) -> None:
    """The PATCH is refused (401, not applied), then the refresh's own request fails: that is no lost write (a
    refused connection is retried like any that never left)."""
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/oauth2/token"):
            raise failure("the token endpoint did not answer", request=request)
        return httpx.Response(401, json={"code": "unauthorized", "message": "refused"})

    async with _answered_by(answer, ACCESS) as client:
        with pytest.raises(OptimizelyError) as refused:
            await client.patch_flags(1, [{"op": "replace", "path": "/k/name", "value": "n"}])
    assert "could not be refreshed" in refused.value.message
    assert "the call was not applied" in refused.value.message
    assert "may or may not" not in str(refused.value)
    assert sent == ["PATCH /flags/v1/projects/1/flags", "POST /oauth2/token"]


async def test_a_refusal_whose_error_is_not_an_rfc_code_is_not_repeated() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(403, json={"error": f"refresh token {REFRESH} is not valid here"})
        return httpx.Response(401, json={"code": "unauthorized", "message": "refused"})

    async with _answered_by(answer, None) as client:
        with pytest.raises(OptimizelyError) as refused:
            await client.list_projects()
    assert "(no error code)" in str(refused.value)
    assert REFRESH not in str(refused.value)
