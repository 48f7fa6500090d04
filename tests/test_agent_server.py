"""The simulated agent server, tested over real HTTP against real child processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import pytest

from exec_watchdog.platform_access.auth import TOKEN_HEADER, agent_token
from exec_watchdog.simulated_platform.agent_server import AgentServer, AgentServerThread, serve_agent, serve_agents
from exec_watchdog.simulated_platform.process_registry import ProcessKind, RegistryConfig

SECRET = "test-secret"
GRACE = 0.3  # the SIGINT → SIGKILL grace, shortened from Trinity's 5 s


@pytest.fixture
async def server() -> AsyncIterator[AgentServer]:
    srv = await serve_agents(["alpha", "beta"], SECRET, config=RegistryConfig(grace_seconds=GRACE))
    yield srv
    await srv.stop()


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 5:30 ahead of UTC, so a local timestamp cannot pass for a UTC one."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def agent_client(srv: AgentServer, name: str, token: str | None = None, timeout: float = 10.0) -> httpx.AsyncClient:
    headers = {TOKEN_HEADER: agent_token(SECRET, name) if token is None else token}
    return httpx.AsyncClient(base_url=srv.agent_url(name), headers=headers, timeout=timeout)


async def start(client: httpx.AsyncClient, execution_id: str, seconds: float = 30, **extra: object) -> int | None:
    response = await client.post("/sim/executions", json={"execution_id": execution_id, "seconds": seconds, **extra})
    assert response.status_code == 202, response.text
    pid: int | None = response.json()["pid"]
    return pid


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def state(srv: AgentServer, execution_id: str) -> str | None:
    status = srv.registry("alpha").status(execution_id)
    return status.state if status else None


def gone(pid: int) -> bool:
    """True when no process has this pid (a zombie left to init counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def running_body(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/executions/running")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# -- the Trinity agent API ------------------------------------------------------------------------

async def test_running_lists_a_started_execution_with_its_pid_naive_utc_start_and_metadata(
        server: AgentServer, far_from_utc: None) -> None:
    async with agent_client(server, "alpha") as client:
        before = datetime.now(UTC).replace(tzinfo=None)
        pid = await start(client, "exec-1", metadata={"schedule_id": "s1"})
        body = await running_body(client)
    assert pid is not None
    [entry] = body["executions"]
    assert entry["execution_id"] == "exec-1" and entry["pid"] == pid and entry["metadata"] == {"schedule_id": "s1"}
    started = datetime.fromisoformat(entry["started_at"])
    assert started.tzinfo is None, "started_at must be naive"
    assert abs((started - before).total_seconds()) < 5, "started_at must be UTC"
    assert body["recently_completed_ids"] == [] and body["pending_ids"] == []
    # posix_spawn returns while the child is still inside execve: its cmdline can be empty a moment.
    await eventually(lambda: psutil.Process(pid).cmdline()[-1:] == ["30.0"])
    assert os.getpgid(pid) == pid, "each execution leads its own process group"


async def test_status_reports_a_running_execution_and_404s_unknown_ones(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await start(client, "exec-1", metadata={"k": "v"})
        status = await client.get("/api/executions/exec-1/status")
        unknown = await client.get("/api/executions/nope/status")
    body = status.json()
    assert status.status_code == 200
    assert body["execution_id"] == "exec-1" and body["running"] is True and body["returncode"] is None
    assert body["metadata"] == {"k": "v"} and "T" in body["started_at"]
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Execution not found"}


async def test_agents_on_one_port_keep_separate_registries(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as alpha, agent_client(server, "beta") as beta:
        await start(alpha, "only-on-alpha")
        assert (await running_body(beta))["executions"] == []
        assert (await beta.get("/api/executions/only-on-alpha/status")).status_code == 404
        assert len((await running_body(alpha))["executions"]) == 1


@pytest.mark.parametrize("kind", ["sleep", "python"])
async def test_terminate_ends_the_whole_process_group(kind: ProcessKind) -> None:
    async with await serve_agents(["alpha"], SECRET, config=RegistryConfig(kind=kind, grace_seconds=2)) as srv, \
            agent_client(srv, "alpha") as client:
        # exit_code 3 in sleep mode is `sh` with a `sleep` child: two processes in one group.
        pid = await start(client, "exec-1", exit_code=3)
        assert pid is not None
        if kind == "sleep":
            await eventually(lambda: len(psutil.Process(pid).children()) == 1)
        group = [pid, *(child.pid for child in psutil.Process(pid).children())]
        began = time.monotonic()
        response = await client.post("/api/executions/exec-1/terminate")
        assert response.status_code == 200
        assert response.json() == {"status": "terminated", "execution_id": "exec-1"}
        assert time.monotonic() - began < 2, "a process that obeys SIGINT must not wait for the grace"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: the pid is gone, not a zombie
        await eventually(lambda: all(gone(p) for p in group))
        body = await running_body(client)
        assert body["executions"] == [] and body["recently_completed_ids"] == ["exec-1"]


@pytest.mark.parametrize("kind", ["sleep", "python"])
async def test_terminate_sigkills_a_process_that_ignores_sigint_after_the_grace(kind: ProcessKind) -> None:
    async with await serve_agents(["alpha"], SECRET, config=RegistryConfig(kind=kind, grace_seconds=GRACE)) as srv, \
            agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        pid = await start(client, "stubborn", ignore_sigint=True)
        assert pid is not None
        os.killpg(pid, signal.SIGINT)  # really ignored, even right after the spawn
        await asyncio.sleep(0.2)
        assert not gone(pid)
        began = time.monotonic()
        response = await client.post("/api/executions/stubborn/terminate")
        elapsed = time.monotonic() - began
    assert response.json() == {"status": "terminated", "execution_id": "stubborn"}
    assert GRACE <= elapsed < GRACE + 2
    assert codes == {"stubborn": -signal.SIGKILL}
    assert gone(pid)


async def test_terminate_of_a_sigint_obeying_process_reports_returncode_minus_two(server: AgentServer) -> None:
    codes: dict[str, int] = {}
    server.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
    async with agent_client(server, "alpha") as client:
        await start(client, "polite")
        assert (await client.post("/api/executions/polite/terminate")).status_code == 200
    assert codes == {"polite": -signal.SIGINT}


async def test_terminate_answers_404_for_unknown_and_unregistered_runs() -> None:
    async with await serve_agents(["alpha"], SECRET) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "done", seconds=0)
        await eventually(lambda: "done" in codes)
        for execution_id in ("done", "never-existed"):
            response = await client.post(f"/api/executions/{execution_id}/terminate")
            assert response.status_code == 404 and response.json() == {"detail": "Execution not found"}


async def test_terminate_of_a_pending_run_answers_terminated_keeps_it_pending_and_cancels_it_at_spawn() -> None:
    config = RegistryConfig(spawn_delay=1.0)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "waiting", seconds=30)
        response = await client.post("/api/executions/waiting/terminate")
        assert response.status_code == 200 and response.json() == {"status": "terminated", "execution_id": "waiting"}
        assert (await running_body(client))["pending_ids"] == ["waiting"], "kept pending until it would spawn"
        await eventually(lambda: "waiting" in codes)
        body = await running_body(client)
        result = await client.get("/api/executions/waiting/result")
    assert codes == {"waiting": -signal.SIGKILL}
    assert body == {"executions": [], "recently_completed_ids": ["waiting"], "pending_ids": []}
    assert result.json()["status"] == "cancelled" and result.json()["terminal_reason"] == "cancelled"


async def test_a_finished_but_still_registered_run_answers_already_finished_and_drains_out_of_every_list() -> None:
    config = RegistryConfig(unregister_delay=30, drain_seconds=1.0)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "quick", seconds=0, exit_code=4)
        await eventually(lambda: state(srv, "quick") == "exited")
        status = (await client.get("/api/executions/quick/status")).json()
        exited = await running_body(client)
        terminate = await client.post("/api/executions/quick/terminate")
        began = time.monotonic()
        draining = await running_body(client)
        status_draining = await client.get("/api/executions/quick/status")
        again = await client.post("/api/executions/quick/terminate")
        last_error = await client.get("/api/executions/quick/last-error")
        assert codes == {}, "not unregistered while it drains"
        await eventually(lambda: "quick" in codes)
        drained_after = time.monotonic() - began
        drained = await running_body(client)
    assert status["running"] is False and status["returncode"] == 4
    assert exited["recently_completed_ids"] == ["quick"], "exited, not unregistered: completed for the watchdog"
    assert terminate.status_code == 200
    assert terminate.json() == {"status": "already_finished", "execution_id": "quick", "returncode": 4}
    assert draining == {"executions": [], "recently_completed_ids": [], "pending_ids": []}  # Trinity's gap
    assert status_draining.status_code == 404 and again.status_code == 404
    assert last_error.json() == {"error_type": "ProcessExited", "error_message": "process exited with code 4"}
    assert drained_after < 10, "the drain ends on its own, long before the 30 s unregister delay"
    assert drained["recently_completed_ids"] == ["quick"] and codes == {"quick": 4}


async def test_a_process_that_outlives_sigkill_makes_terminate_answer_500() -> None:
    """Nothing survives SIGKILL here, so the run's process group is pointed at a decoy group: the
    signals hit the decoy and the watched process never exits, as an unkillable one would not."""
    config = RegistryConfig(grace_seconds=0.1, kill_wait_seconds=0.2)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        await start(client, "exec-1")
        decoy = subprocess.Popen(["sleep", "30"], start_new_session=True)
        run = srv.registry("alpha")._runs["exec-1"]
        real_pid, run.pid = run.pid, decoy.pid
        response = await client.post("/api/executions/exec-1/terminate")
        run.pid = real_pid
        decoy.wait(5)
        assert (await client.get("/api/executions/exec-1/status")).json()["running"] is True
    assert response.status_code == 500
    assert response.json() == {"detail": f"process {decoy.pid} did not exit after SIGKILL"}


async def test_last_error_is_null_while_healthy_reports_a_failed_exit_and_404s_the_unknown() -> None:
    config = RegistryConfig(unregister_delay=30)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        await start(client, "healthy")
        await start(client, "failing", seconds=0, exit_code=2)
        await start(client, "erroring", error_type="rate_limit", error_message="429 from the model")
        await eventually(lambda: state(srv, "failing") == "exited")
        healthy = (await client.get("/api/executions/healthy/last-error")).json()
        failing = (await client.get("/api/executions/failing/last-error")).json()
        erroring = (await client.get("/api/executions/erroring/last-error")).json()
        unknown = await client.get("/api/executions/unknown/last-error")
    assert healthy == {"error_type": None, "error_message": None}
    assert failing == {"error_type": "ProcessExited", "error_message": "process exited with code 2"}
    assert erroring == {"error_type": "rate_limit", "error_message": "429 from the model"}
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Execution not found"}


# -- pending and recently completed --------------------------------------------------------------

async def test_a_pending_execution_is_listed_in_pending_ids_and_404s_on_status_until_it_spawns() -> None:
    config = RegistryConfig(spawn_delay=0.5)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        pid = await start(client, "later")
        assert pid is None
        body = await running_body(client)
        assert body["pending_ids"] == ["later"] and body["executions"] == []
        assert (await client.get("/api/executions/later/status")).status_code == 404
        assert (await client.get("/api/executions/later/last-error")).status_code == 404
        await asyncio.sleep(0.8)
        body = await running_body(client)
        assert body["pending_ids"] == []
        assert [e["execution_id"] for e in body["executions"]] == ["later"]


async def test_a_completed_execution_stays_in_recently_completed_ids_for_the_window_only() -> None:
    config = RegistryConfig(completed_window=1.0)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "brief", seconds=0.1, exit_code=5)
        await eventually(lambda: "brief" in codes)
        body = await running_body(client)
        assert body["recently_completed_ids"] == ["brief"] and body["executions"] == []
        assert (await client.get("/api/executions/brief/status")).status_code == 404
        assert codes == {"brief": 5}
        await asyncio.sleep(1.1)
        assert (await running_body(client))["recently_completed_ids"] == []


async def test_an_older_agent_answers_running_with_executions_only() -> None:
    async with await serve_agents(["old", "new"], SECRET, legacy=["old"]) as srv, \
            agent_client(srv, "old") as old, agent_client(srv, "new") as new:
        await start(old, "e1")
        assert set(await running_body(old)) == {"executions"}
        assert set(await running_body(new)) == {"executions", "recently_completed_ids", "pending_ids"}
        switched = await old.post("/sim/legacy", json={"enabled": False})
        assert switched.json() == {"legacy": False, "result_route": True}
        assert "pending_ids" in await running_body(old)


# -- retained results (Trinity #2944) ----------------------------------------------------------

async def retained(client: httpx.AsyncClient, execution_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Wait until the agent has retained the run's result, and return the /result body."""
    deadline = time.monotonic() + timeout
    while (response := await client.get(f"/api/executions/{execution_id}/result")).status_code == 404:
        assert response.json() == NO_RECORD, response.text
        assert time.monotonic() < deadline, "no retained result in time"
        await asyncio.sleep(0.02)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


NO_RECORD = {"detail": {"code": "no_retained_result"}}


async def test_a_synchronous_success_is_retained_as_trinitys_success_envelope(far_from_utc: None) -> None:
    async with await serve_agents(["alpha"], SECRET) as srv, agent_client(srv, "alpha") as client:
        before = datetime.now(UTC)
        await start(client, "ok-1", seconds=0.2, response="all done", cost_usd=0.25)
        body = await retained(client, "ok-1")
    assert set(body) == {"status", "response", "execution_log", "metadata", "session_id", "terminal_reason",
                         "retained_at", "truncated_log"}, "a success envelope has no error"
    assert body["status"] == "success" and body["response"] == "all done" and body["terminal_reason"] == "completed"
    assert body["metadata"]["cost_usd"] == 0.25 and body["metadata"]["duration_ms"] >= 150
    assert body["session_id"] == body["metadata"]["session_id"] and len(body["session_id"]) == 36
    assert body["execution_log"] and body["truncated_log"] is False
    assert body["retained_at"].endswith("+00:00"), "written with an offset, not Z"
    assert 0 <= (datetime.fromisoformat(body["retained_at"]) - before).total_seconds() < 10


@pytest.mark.parametrize(("error_type", "error_code", "terminal_reason", "error"), [
    (None, None, "error", "process exited with code 3"),
    ("rate_limit", "billing", "rate_limit", "429 from the model"),
    ("auth", "auth", "auth", "429 from the model"),
])
async def test_a_synchronous_failure_is_retained_with_only_the_five_failure_keys(
        error_type: str | None, error_code: str | None, terminal_reason: str, error: str) -> None:
    extra = {"error_type": error_type, "error_message": "429 from the model"} if error_type else {}
    async with await serve_agents(["alpha"], SECRET) as srv, agent_client(srv, "alpha") as client:
        await start(client, "bad-1", seconds=0, exit_code=3, **extra)
        body = await retained(client, "bad-1")
    assert body == {"status": "failed", "error": error, "error_code": error_code, "terminal_reason": terminal_reason,
                    "metadata": {}, "retained_at": body["retained_at"], "truncated_log": False}


async def test_a_terminated_run_is_retained_as_cancelled(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await start(client, "stop-me")
        assert (await client.post("/api/executions/stop-me/terminate")).json()["status"] == "terminated"
        body = await retained(client, "stop-me")
    assert body["status"] == "cancelled" and body["terminal_reason"] == "cancelled" and body["error_code"] is None


async def test_async_unknown_running_and_unsafe_ids_answer_the_coded_404(server: AgentServer) -> None:
    codes: dict[str, int] = {}
    server.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
    async with agent_client(server, "alpha") as client:
        await start(client, "async-1", seconds=0, synchronous=False)
        await start(client, "dotted.id", seconds=0)
        await start(client, "still-running")
        await start(client, "sync-1", seconds=0)
        await retained(client, "sync-1")  # written after the others ended: theirs would be there by now
        assert {"async-1", "dotted.id"} <= set(codes)
        for execution_id in ("async-1", "dotted.id", "still-running", "never-existed", "-Ab_9"):
            response = await client.get(f"/api/executions/{execution_id}/result")
            assert response.status_code == 404 and response.json() == NO_RECORD, execution_id


async def test_the_record_is_written_after_unregister_so_a_recently_completed_id_can_still_have_none() -> None:
    config = RegistryConfig(retain_delay=1.0)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "_gap", seconds=0)
        await eventually(lambda: "_gap" in codes)
        listed = (await running_body(client))["recently_completed_ids"]
        early = await client.get("/api/executions/_gap/result")
        body = await retained(client, "_gap")
    assert listed == ["_gap"] and early.status_code == 404 and early.json() == NO_RECORD
    assert body["status"] == "success"


async def test_a_record_expires_after_the_ttl() -> None:
    config = RegistryConfig(retained_ttl=0.5)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        await start(client, "brief", seconds=0)
        await retained(client, "brief")
        await asyncio.sleep(0.6)
        response = await client.get("/api/executions/brief/result")
    assert response.status_code == 404 and response.json() == NO_RECORD


async def test_the_oldest_records_are_evicted_past_the_cap() -> None:
    config = RegistryConfig(retained_max=3)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        for n in range(5):
            await start(client, f"run-{n}", seconds=0)
            await retained(client, f"run-{n}")
        answers = {n: (await client.get(f"/api/executions/run-{n}/result")).status_code for n in range(5)}
    assert answers == {0: 404, 1: 404, 2: 200, 3: 200, 4: 200}


async def test_a_transcript_over_the_cap_is_dropped_but_the_result_kept() -> None:
    config = RegistryConfig(retained_log_max_bytes=10)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        await start(client, "chatty", seconds=0, response="kept")
        body = await retained(client, "chatty")
    assert body["execution_log"] is None and body["truncated_log"] is True and body["response"] == "kept"


async def test_records_outlive_an_agent_restart_but_runs_it_killed_have_none(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await start(client, "before", seconds=0)
        await retained(client, "before")
        await start(client, "killed")
        await client.post("/sim/restart")
        await asyncio.sleep(0.2)
        assert (await client.get("/api/executions/before/result")).status_code == 200
        response = await client.get("/api/executions/killed/result")
    assert response.status_code == 404 and response.json() == NO_RECORD


async def test_an_old_image_answers_result_with_the_bare_404() -> None:
    async with await serve_agents(["old", "pre2944", "new"], SECRET, legacy=["old"],
                                  without_result_route=["pre2944"]) as srv:
        for name in ("old", "pre2944", "new"):
            async with agent_client(srv, name) as client:
                await start(client, "e1", seconds=0)
                await asyncio.sleep(0.2)
                response = await client.get("/api/executions/e1/result")
                if name == "new":
                    assert response.status_code == 200
                else:
                    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}, name
        async with agent_client(srv, "pre2944") as client:
            assert "pending_ids" in await running_body(client), "its /running is current"
        async with agent_client(srv, "new") as client:
            switched = await client.post("/sim/legacy", json={"enabled": False, "result_route": False})
            assert switched.json() == {"legacy": False, "result_route": False}
            assert (await client.get("/api/executions/e1/result")).json() == {"detail": "Not Found"}


async def test_a_restart_before_the_record_is_written_loses_it() -> None:
    config = RegistryConfig(retain_delay=0.5)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "unlucky", seconds=0)
        await eventually(lambda: "unlucky" in codes)
        await client.post("/sim/restart")
        await asyncio.sleep(0.8)
        response = await client.get("/api/executions/unlucky/result")
    assert response.status_code == 404 and response.json() == NO_RECORD


async def test_trinity_ids_with_any_first_character_and_names_with_underscores_and_dots_work_everywhere() -> None:
    config = RegistryConfig(unregister_delay=30, drain_seconds=0.2)
    async with await serve_agents(["gamma_ops", "beta.ops"], SECRET, config=config) as srv:
        for name in ("gamma_ops", "beta.ops"):
            async with agent_client(srv, name) as client:
                for execution_id in ("-AbCdEfGhIjKlMnOpQrStU", "_0123456789abcdefghijk"):
                    await start(client, execution_id, seconds=0)
                    status = srv.registry(name).status
                    await eventually(lambda: getattr(status(execution_id), "state", None) == "exited")  # noqa: B023
                    assert (await client.get(f"/api/executions/{execution_id}/status")).status_code == 200
                    assert (await client.get(f"/api/executions/{execution_id}/last-error")).status_code == 200
                    terminate = await client.post(f"/api/executions/{execution_id}/terminate")
                    assert terminate.json()["status"] == "already_finished"
                    assert (await retained(client, execution_id))["status"] == "success"


@pytest.mark.parametrize(("option", "value"), [
    ("retained_max", 0), ("retained_max", 1.5), ("retained_log_max_bytes", True), ("drain_seconds", -1),
    ("retain_delay", float("nan")), ("retained_ttl", float("inf")),
])
def test_bad_retention_and_drain_settings_are_refused(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        RegistryConfig(**{option: value})  # type: ignore[arg-type]


# -- restart ----------------------------------------------------------------------------------------

async def test_restart_kills_every_process_and_forgets_everything_without_reporting() -> None:
    config = RegistryConfig(spawn_delay=0, completed_window=60)
    async with await serve_agents(["alpha"], SECRET, config=config) as srv, agent_client(srv, "alpha") as client:
        codes: dict[str, int] = {}
        srv.registry("alpha").on_complete(lambda execution_id, code: codes.__setitem__(execution_id, code))
        await start(client, "done", seconds=0)
        await eventually(lambda: "done" in codes)
        pids = [await start(client, "obeys"), await start(client, "stubborn", ignore_sigint=True)]
        srv.registry("alpha").config = RegistryConfig(spawn_delay=30)
        await start(client, "queued")
        assert (await client.post("/sim/restart")).json() == {"status": "restarted"}
        body = await running_body(client)
        assert body == {"executions": [], "recently_completed_ids": [], "pending_ids": []}
        await eventually(lambda: all(gone(p) for p in pids if p is not None))
        assert codes == {"done": 0}, "a restarted agent reports nothing about the runs it lost"
        await start(client, "after-restart", seconds=0)  # still usable


async def test_stopping_the_server_kills_the_simulated_processes() -> None:
    srv = await serve_agents(["alpha"], SECRET)
    async with agent_client(srv, "alpha") as client:
        pid = await start(client, "exec-1")
    await srv.stop()
    assert pid is not None and gone(pid)


# -- auth and names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/executions/running", "/api/executions/x/status", "/sim/state"])
async def test_a_missing_or_wrong_token_gets_401(server: AgentServer, path: str) -> None:
    for token in ("", "0" * 64, agent_token(SECRET, "beta"), agent_token("other-secret", "alpha")):
        async with agent_client(server, "alpha", token=token) as client:
            response = await client.get(path)
        assert response.status_code == 401 and response.json() == {"detail": "Unauthorized"}, token


async def test_the_control_api_needs_the_token_too(server: AgentServer) -> None:
    async with agent_client(server, "alpha", token="wrong") as client:
        response = await client.post("/sim/executions", json={"execution_id": "e", "seconds": 1})
        assert response.status_code == 401
        assert (await client.post("/sim/restart")).status_code == 401
        assert (await client.post("/sim/fault", json={"mode": "down"})).status_code == 401
    assert server.registry("alpha").running() == [] and server.agents["alpha"].fault == "none"


async def test_health_needs_no_token(server: AgentServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(server.agent_url("alpha") + "/health")
        root = await client.get(server.base_url + "/health")
    assert response.status_code == 200 and response.json()["status"] == "healthy"
    assert root.json() == {"status": "healthy", "agents": 2}


@pytest.mark.parametrize("raw_path", [
    "/agents/../health", "/agents/%2e%2e/health", "/agents/./health", "/agents/a%2Fb/health",
    "/agents/" + "a" * 64 + "/health", "/agents/al%20pha/health", "/agents/%C3%A4/health",
    "/agents/alpha;rm/health", "/agents//health", "/agents/alpha", "/agents/gamma/health", "/alpha/health",
])
async def test_hostile_or_unknown_agent_names_get_404(server: AgentServer, raw_path: str) -> None:
    name = raw_path.split("/")[2] if raw_path.startswith("/agents/") else "alpha"
    # Sent byte for byte over a socket: httpx would normalise the dot segments away.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET {raw_path} HTTP/1.1\r\nHost: agents\r\n{TOKEN_HEADER}: {agent_token(SECRET, name)}\r\n"
                 "Connection: close\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"404" and json.loads(body) == {"detail": "Not Found"}


async def test_serving_refuses_invalid_agent_names() -> None:
    for name in ("..", "a/b", "", "x" * 64, "ä"):
        with pytest.raises(ValueError, match="invalid agent name"):
            await serve_agents([name], SECRET)


# -- faults ------------------------------------------------------------------------------------------

async def test_hang_holds_requests_until_the_client_times_out_but_the_control_api_still_works(
        server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client, agent_client(server, "alpha", timeout=0.5) as impatient:
        assert (await client.post("/sim/fault", json={"mode": "hang"})).json() == {"mode": "hang"}
        for path in ("/api/executions/running", "/health"):
            with pytest.raises(httpx.ReadTimeout):
                await impatient.get(path)
        assert (await client.get("/sim/state")).json()["fault"] == "hang"
        async with agent_client(server, "beta") as beta:
            assert (await beta.get("/api/executions/running")).status_code == 200, "other agents are unaffected"
        held = asyncio.ensure_future(client.get("/api/executions/running"))
        await asyncio.sleep(0.2)
        assert not held.done()
        await client.post("/sim/fault", json={"mode": "none"})
        assert (await held).status_code == 503, "lifting the fault lets held requests go"
        assert (await client.get("/api/executions/running")).status_code == 200


async def test_garbage_answers_200_with_a_body_that_is_not_json(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await client.post("/sim/fault", json={"mode": "garbage"})
        response = await client.get("/api/executions/running")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_down_answers_503_until_the_fault_is_lifted(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await client.post("/sim/fault", json={"mode": "down"})
        assert (await client.get("/api/executions/running")).status_code == 503
        assert (await client.get("/health")).status_code == 503
        await client.post("/sim/fault", json={"mode": "none"})
        assert (await client.get("/api/executions/running")).status_code == 200


async def test_a_gone_agent_kills_its_processes_and_answers_like_an_agent_that_does_not_exist(
        server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await start(client, "e-gone", seconds=60)
        status = server.registry("alpha").status("e-gone")
        assert status is not None and status.pid is not None
        pid = status.pid
        await client.post("/sim/fault", json={"mode": "gone"})
        for path in ("/api/executions/running", "/health", "/api/executions/e-gone/status"):
            response = await client.get(path)
            assert (response.status_code, response.json()) == (404, {"detail": "Not Found"}), path
    assert server.registry("alpha").running() == []
    await asyncio.sleep(0.2)
    assert not _alive(pid), "its process was killed with it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_an_unknown_fault_mode_is_refused(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        response = await client.post("/sim/fault", json={"mode": "explode"})
    assert response.status_code == 422 and "fault mode must be one of" in response.json()["detail"]


# -- the control API's input checks --------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"seconds": 1}, 422, "'execution_id' is required"),
    ({"execution_id": "e", "seconds": "1"}, 422, "'seconds' has the wrong type"),
    ({"execution_id": "e", "seconds": True}, 422, "'seconds' has the wrong type"),
    ({"execution_id": "e", "seconds": -1}, 422, "seconds must be a number"),
    ({"execution_id": "e", "seconds": 1, "exit_code": 256}, 422, "exit_code must be"),
    ({"execution_id": "e/../x", "seconds": 1}, 422, "execution_id must match"),
    ({"execution_id": "e", "seconds": 1, "metadata": [1]}, 422, "'metadata' has the wrong type"),
    ({"execution_id": "e", "seconds": 1, "synchronous": "yes"}, 422, "'synchronous' has the wrong type"),
    ({"execution_id": "e", "seconds": 1, "cost_usd": -1}, 422, "cost_usd must be"),
    ({"execution_id": "e", "seconds": 1, "response": 5}, 422, "'response' has the wrong type"),
    ([1, 2], 400, "must be a JSON object"),
])
async def test_bad_start_requests_get_a_clear_error(server: AgentServer, body: object, status: int,
                                                    detail: str) -> None:
    async with agent_client(server, "alpha") as client:
        response = await client.post("/sim/executions", json=body)
    assert response.status_code == status and detail in response.json()["detail"]
    assert server.registry("alpha").running() == []


async def test_starting_an_execution_id_twice_is_a_conflict(server: AgentServer) -> None:
    async with agent_client(server, "alpha") as client:
        await start(client, "once")
        response = await client.post("/sim/executions", json={"execution_id": "once", "seconds": 1})
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


# -- other layouts --------------------------------------------------------------------------------

async def test_one_agent_can_be_served_at_the_root_of_its_own_port() -> None:
    async with await serve_agent("solo", SECRET) as srv:
        assert srv.url_template == srv.base_url
        async with agent_client(srv, "solo") as client:
            await start(client, "e1")
            assert [e["execution_id"] for e in (await running_body(client))["executions"]] == ["e1"]
            async with agent_client(srv, "solo", token="bad") as bad:
                assert (await bad.get("/api/executions/running")).status_code == 401


def test_a_threaded_server_serves_synchronous_callers() -> None:
    with AgentServerThread(["alpha"], SECRET) as thread:
        thread.call(lambda: thread.server.registry("alpha").start("e1", 30))
        headers = {TOKEN_HEADER: agent_token(SECRET, "alpha")}
        url = thread.url_template.format(agent="alpha")
        response = httpx.get(url + "/api/executions/running", headers=headers)
        [entry] = response.json()["executions"]
    assert entry["execution_id"] == "e1" and gone(entry["pid"])
