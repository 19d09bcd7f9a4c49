"""Each endpoint the App uses answers like GitHub (and its answer passes GitHub's OpenAPI schema)."""

from __future__ import annotations

import base64
import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox
from sandbox.records import DEFAULT_APP_PERMISSIONS, IssueState, Permission, Repo
from tests.conftest import installation_token, seed_repo

FILES = {
    "registry.yaml": b"models:\n  - fr-v1\n",
    "models/fr-v1.onnx": b"\x08\x07\x12\x04onnx",
    "README.md": b"# models\n",
}


@dataclass
class Client:
    """A session with an installation token, rooted at ``/repos/acme/models``."""

    session: aiohttp.ClientSession
    sandbox: Sandbox
    repo: Repo

    @property
    def base(self) -> str:
        return f"{self.sandbox.url}/repos/acme/models"

    async def call(
        self, method: str, where: str, *, json: Any = None, **params: Any
    ) -> tuple[int, Any, Any]:
        url = where if where.startswith("http") else f"{self.base}{where}"
        async with self.session.request(
            method, url, json=json, params=params or None, allow_redirects=False
        ) as response:
            text = await response.text()
            body = await response.json() if text else None
            return response.status, body, response.headers


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[Client]:
    """An installation-token client on acme/models (registry, one model, README)."""
    installation, repo = seed_repo(sandbox.state, FILES)
    token = await installation_token(sandbox, installation)
    headers = {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Client(session, sandbox, repo)


async def test_branch_and_commit_point_at_the_seeded_head(client: Client) -> None:
    head = client.sandbox.state.branches[client.repo.id]["main"]
    status, branch, _ = await client.call("GET", "/branches/main")
    assert (status, branch["name"], branch["commit"]["sha"]) == (200, "main", head)
    status, commit, _ = await client.call("GET", "/commits/main")
    assert status == 200 and commit["sha"] == head
    assert {f["filename"] for f in commit["files"]} == set(FILES)
    status, missing, _ = await client.call("GET", "/branches/nope")
    assert (status, missing["message"]) == (404, "Branch not found")


async def test_contents_returns_base64_file_at_ref_and_directory_listing(client: Client) -> None:
    state = client.sandbox.state
    old = state.branches[client.repo.id]["main"]
    state.commit(client.repo, {"registry.yaml": b"models: []\n"}, message="empty")
    status, file, _ = await client.call("GET", "/contents/registry.yaml", ref=old)
    assert status == 200 and file["encoding"] == "base64"
    assert base64.b64decode(file["content"]) == FILES["registry.yaml"]
    status, now, _ = await client.call("GET", "/contents/registry.yaml")
    assert base64.b64decode(now["content"]) == b"models: []\n"
    status, listing, _ = await client.call("GET", "/contents/models")
    assert status == 200 and [e["path"] for e in listing] == ["models/fr-v1.onnx"]
    status, _, _ = await client.call("GET", "/contents/absent.txt")
    assert status == 404


async def test_issues_filter_by_label_and_state_and_create_with_labels(client: Client) -> None:
    state = client.sandbox.state
    state.add_issue(client.repo, "tracked", labels=["model-guard"])
    state.add_issue(client.repo, "other")
    state.add_issue(client.repo, "closed", labels=["model-guard"], state=IssueState.CLOSED)
    status, found, _ = await client.call("GET", "/issues", labels="model-guard", state="open")
    assert status == 200 and [i["title"] for i in found] == ["tracked"]
    _, every, _ = await client.call("GET", "/issues", labels="model-guard", state="all")
    assert sorted(i["title"] for i in every) == ["closed", "tracked"]
    status, created, headers = await client.call(
        "POST", "/issues", json={"title": "Regression in fr-v2", "labels": ["model-guard", "new"]}
    )
    assert status == 201 and headers["Location"] == created["url"]
    assert [label["name"] for label in created["labels"]] == ["model-guard", "new"]
    assert created["user"]["login"] == "model-guard[bot]"
    status, fetched, _ = await client.call("GET", f"/issues/{created['number']}")
    assert status == 200 and fetched["title"] == "Regression in fr-v2"


async def test_comment_edit_then_delete_answers_404_afterwards(client: Client) -> None:
    issue = client.sandbox.state.add_issue(client.repo, "sticky")
    _, created, _ = await client.call(
        "POST", f"/issues/{issue.number}/comments", json={"body": "v1"}
    )
    path = f"/issues/comments/{created['id']}"
    status, edited, _ = await client.call("PATCH", path, json={"body": "v2"})
    assert (status, edited["body"]) == (200, "v2")
    status, fetched, _ = await client.call("GET", path)
    assert (status, fetched["body"]) == (200, "v2")
    status, _, _ = await client.call("DELETE", path)
    assert status == 204
    status, gone, _ = await client.call("GET", path)
    assert (status, gone["message"]) == (404, "Not Found")


async def test_reaction_is_created_once_then_found(client: Client) -> None:
    issue = client.sandbox.state.add_issue(client.repo, "react")
    comment = client.sandbox.state.add_comment(client.repo, issue.number, "/model-guard run")
    path = f"/issues/comments/{comment.id}/reactions"
    first, body, _ = await client.call("POST", path, json={"content": "eyes"})
    again, same, _ = await client.call("POST", path, json={"content": "eyes"})
    assert (first, again) == (201, 200)
    assert body["id"] == same["id"] and body["content"] == "eyes"


async def test_comment_reactions_are_listed_oldest_first_and_filtered_by_content(
    client: Client,
) -> None:
    state = client.sandbox.state
    issue = state.add_issue(client.repo, "react")
    comment = state.add_comment(client.repo, issue.number, "/model-guard run")
    path = f"/issues/comments/{comment.id}/reactions"
    await client.call("POST", path, json={"content": "eyes"})
    await client.call("POST", path, json={"content": "rocket"})
    status, listed, _ = await client.call("GET", path)
    assert (status, [r["content"] for r in listed]) == (200, ["eyes", "rocket"])
    _, rockets, _ = await client.call("GET", path, content="rocket")
    assert [r["content"] for r in rockets] == ["rocket"]
    _, paged, headers = await client.call("GET", path, per_page=1)
    assert len(paged) == 1 and 'rel="next"' in headers["Link"]
    status, missing, _ = await client.call("GET", "/issues/comments/999/reactions")
    assert (status, missing["message"]) == (404, "Not Found")


async def test_issue_reaction_is_created_once_and_counted_on_the_issue(client: Client) -> None:
    pull = client.sandbox.state.add_pull(client.repo, head="feature", files={"x.txt": b"x"})
    path = f"/issues/{pull.number}/reactions"
    first, body, _ = await client.call("POST", path, json={"content": "+1"})
    again, same, _ = await client.call("POST", path, json={"content": "+1"})
    assert (first, again, body["id"]) == (201, 200, same["id"])
    assert body["user"]["login"] == "model-guard[bot]"
    _, issue, _ = await client.call("GET", f"/issues/{pull.number}")
    assert (issue["reactions"]["total_count"], issue["reactions"]["+1"]) == (1, 1)
    status, bad, _ = await client.call("POST", path, json={"content": "thumbs"})
    assert (status, bad["errors"][0]["field"]) == (422, "content")
    client.sandbox.violations.clear()  # "thumbs" is off the request schema, on purpose
    status, _, _ = await client.call("POST", "/issues/99/reactions", json={"content": "eyes"})
    assert status == 404


async def test_issue_edit_replaces_fields_and_labels_and_keeps_the_rest(client: Client) -> None:
    state = client.sandbox.state
    issue = state.add_issue(client.repo, "old", body="keep me", labels=["bug", "triage"])
    path = f"/issues/{issue.number}"
    status, edited, _ = await client.call("PATCH", path, json={"title": "new", "labels": ["Bug"]})
    assert status == 200
    assert (edited["title"], edited["body"]) == ("new", "keep me")
    assert [label["name"] for label in edited["labels"]] == ["bug"]  # existing label, its case
    _, fresh, _ = await client.call("PATCH", path, json={"labels": ["model-guard"], "body": None})
    assert fresh["body"] is None and [label["name"] for label in fresh["labels"]] == ["model-guard"]
    assert state.label(client.repo, "model-guard").name == "model-guard"
    _, cleared, _ = await client.call("PATCH", path, json={"labels": []})
    assert cleared["labels"] == []


async def test_issue_close_and_reopen_set_state_reason_even_when_locked(client: Client) -> None:
    state = client.sandbox.state
    issue = state.add_issue(client.repo, "stale", locked=True)
    path = f"/issues/{issue.number}"
    _, ignored, _ = await client.call("PATCH", path, json={"state_reason": "not_planned"})
    assert (ignored["state"], ignored["state_reason"]) == ("open", None)
    _, closed, _ = await client.call(
        "PATCH", path, json={"state": "closed", "state_reason": "not_planned"}
    )
    assert (closed["state"], closed["state_reason"], closed["locked"]) == (
        "closed",
        "not_planned",
        True,
    )
    assert closed["closed_at"] is not None
    _, reopened, _ = await client.call("PATCH", path, json={"state": "open"})
    assert (reopened["state"], reopened["state_reason"], reopened["closed_at"]) == (
        "open",
        "reopened",
        None,
    )
    _, default, _ = await client.call("PATCH", path, json={"state": "closed"})
    assert default["state_reason"] == "completed"
    status, bad, _ = await client.call("PATCH", path, json={"state": "merged"})
    assert (status, bad["errors"][0]["field"]) == (422, "state")
    client.sandbox.violations.clear()  # "merged" is off the request schema, on purpose


async def test_deleted_or_missing_issue_cannot_be_edited(client: Client) -> None:
    state = client.sandbox.state
    issue = state.add_issue(client.repo, "gone")
    state.update_issue(client.repo, issue.number, deleted=True)
    status, _, _ = await client.call("PATCH", f"/issues/{issue.number}", json={"title": "x"})
    assert status == 410
    status, _, _ = await client.call("PATCH", "/issues/99", json={"title": "x"})
    assert status == 404


async def test_labels_create_get_and_refuse_a_taken_name(client: Client) -> None:
    status, label, _ = await client.call(
        "POST", "/labels", json={"name": "model-guard", "color": "#1D76DB"}
    )
    assert (status, label["color"]) == (201, "1d76db")
    status, fetched, _ = await client.call("GET", "/labels/MODEL-GUARD")
    assert (status, fetched["id"]) == (200, label["id"])
    status, taken, _ = await client.call("POST", "/labels", json={"name": "Model-Guard"})
    assert status == 422 and taken["errors"][0]["code"] == "already_exists"


async def test_check_run_create_update_get_and_list_by_name(client: Client) -> None:
    head = client.sandbox.state.branches[client.repo.id]["main"]
    status, run, _ = await client.call(
        "POST",
        "/check-runs",
        json={"name": "model-guard", "head_sha": head, "status": "in_progress"},
    )
    assert (status, run["status"], run["conclusion"]) == (201, "in_progress", None)
    output = {"title": "No regression", "summary": "5 models, all within tolerance"}
    status, done, _ = await client.call(
        "PATCH", f"/check-runs/{run['id']}", json={"conclusion": "success", "output": output}
    )
    assert (status, done["status"], done["conclusion"]) == (200, "completed", "success")
    assert done["output"]["summary"] == output["summary"]
    _, fetched, _ = await client.call("GET", f"/check-runs/{run['id']}")
    assert fetched["completed_at"] is not None
    await client.call("POST", "/check-runs", json={"name": "other", "head_sha": head})
    status, listed, _ = await client.call(
        "GET", f"/commits/{head}/check-runs", check_name="model-guard"
    )
    assert status == 200 and [r["id"] for r in listed["check_runs"]] == [run["id"]]
    status, bad, _ = await client.call(
        "POST", "/check-runs", json={"name": "x", "head_sha": "0" * 40}
    )
    assert status == 422 and "No commit found" in bad["message"]


async def test_check_suite_rerequest_answers_201_for_the_apps_suite_only(client: Client) -> None:
    head = client.sandbox.state.branches[client.repo.id]["main"]
    _, run, _ = await client.call(
        "POST", "/check-runs", json={"name": "model-guard", "head_sha": head}
    )
    suite = run["check_suite"]["id"]
    status, body, _ = await client.call("POST", f"/check-suites/{suite}/rerequest")
    assert (status, body) == (201, {})
    assert client.sandbox.state.rerequested_suites == [suite]
    status, missing, _ = await client.call("POST", "/check-suites/999/rerequest")
    assert (status, missing["message"]) == (404, "Not Found")


async def test_combined_status_without_statuses_is_pending_and_needs_statuses_read(
    sandbox: Sandbox,
) -> None:
    permissions = dict(DEFAULT_APP_PERMISSIONS) | {"statuses": "read"}
    installation = sandbox.state.add_installation("acme", permissions=permissions)
    _, repo = seed_repo(sandbox.state, FILES, installation=installation)
    head = sandbox.state.branches[repo.id]["main"]
    token = await installation_token(sandbox, installation)
    narrow = await installation_token(sandbox, installation, permissions={"contents": "read"})
    url = f"{sandbox.url}/repos/acme/models/commits/main/status"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"token {token}"}) as answer:
            combined = await answer.json()
        assert answer.status == 200
        assert (combined["state"], combined["sha"], combined["statuses"]) == ("pending", head, [])
        assert combined["url"].endswith(f"/repos/acme/models/commits/{head}/status")
        async with session.get(url, headers={"Authorization": f"token {narrow}"}) as answer:
            assert answer.status == 403
        missing = url.replace("/main/", "/nowhere/")
        async with session.get(missing, headers={"Authorization": f"token {token}"}) as answer:
            assert answer.status == 404


async def test_pull_and_its_files_show_the_branch_changes(client: Client) -> None:
    pull = client.sandbox.state.add_pull(
        client.repo, head="add-v2", files={"models/fr-v2.onnx": b"v2", "README.md": None}
    )
    status, body, _ = await client.call("GET", f"/pulls/{pull.number}")
    assert status == 200
    assert (body["head"]["ref"], body["base"]["ref"], body["changed_files"]) == (
        "add-v2",
        "main",
        2,
    )
    status, files, _ = await client.call("GET", f"/pulls/{pull.number}/files")
    assert status == 200
    assert {(f["filename"], f["status"]) for f in files} == {
        ("models/fr-v2.onnx", "added"),
        ("README.md", "removed"),
    }


async def test_collaborator_permission_reports_the_role(client: Client) -> None:
    client.sandbox.state.set_permission(client.repo, "maria", Permission.MAINTAIN)
    status, body, _ = await client.call("GET", "/collaborators/maria/permission")
    assert (status, body["permission"], body["role_name"]) == (200, "write", "maintain")
    _, owner, _ = await client.call("GET", "/collaborators/acme/permission")
    assert owner["permission"] == "admin"


async def test_installation_repositories_and_rate_limit(client: Client) -> None:
    status, body, _ = await client.call("GET", f"{client.sandbox.url}/installation/repositories")
    assert status == 200 and [r["full_name"] for r in body["repositories"]] == ["acme/models"]
    status, limits, _ = await client.call("GET", f"{client.sandbox.url}/rate_limit")
    assert status == 200 and limits["resources"]["core"]["limit"] == 5000


async def test_commits_list_filters_by_path(client: Client) -> None:
    state = client.sandbox.state
    first = state.branches[client.repo.id]["main"]
    second = state.commit(client.repo, {"README.md": b"# changed\n"}, message="docs")
    status, listed, _ = await client.call("GET", "/commits")
    assert status == 200 and [c["sha"] for c in listed] == [second, first]
    _, touched, _ = await client.call("GET", "/commits", path="registry.yaml")
    assert [c["sha"] for c in touched] == [first]
    status, compared, _ = await client.call("GET", f"/compare/{first}...{second}")
    assert (status, compared["status"], compared["ahead_by"]) == (200, "ahead", 1)


async def test_tarball_redirects_to_an_archive_of_the_ref(client: Client) -> None:
    status, _, headers = await client.call("GET", "/tarball/main")
    assert status == 302
    async with client.session.get(headers["Location"]) as response:
        assert response.status == 200
        data = await response.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = {m.name.split("/", 1)[1]: archive.extractfile(m) for m in archive.getmembers()}
        assert set(names) == set(FILES)
        extracted = names["registry.yaml"]
        assert extracted is not None and extracted.read() == FILES["registry.yaml"]


async def test_deleted_issue_answers_410_gone(client: Client) -> None:
    issue = client.sandbox.state.add_issue(client.repo, "spam")
    client.sandbox.state.update_issue(client.repo, issue.number, deleted=True)
    status, body, _ = await client.call("GET", f"/issues/{issue.number}")
    assert (status, body["message"]) == (410, "This issue was deleted")
    status, _, _ = await client.call(
        "POST", f"/issues/{issue.number}/comments", json={"body": "late"}
    )
    assert status == 410


async def test_raw_media_types_return_bytes_and_the_sha(client: Client) -> None:
    head = client.sandbox.state.branches[client.repo.id]["main"]
    raw = {"Accept": "application/vnd.github.raw"}
    async with client.session.get(f"{client.base}/contents/models/fr-v1.onnx", headers=raw) as r:
        assert (r.status, await r.read()) == (200, FILES["models/fr-v1.onnx"])
    sha_type = {"Accept": "application/vnd.github.sha"}
    async with client.session.get(f"{client.base}/commits/main", headers=sha_type) as r:
        assert (r.status, await r.text()) == (200, head)


async def test_comments_since_filters_by_update_time(client: Client) -> None:
    issue = client.sandbox.state.add_issue(client.repo, "thread")
    client.sandbox.state.add_comment(client.repo, issue.number, "old")
    status, none, _ = await client.call(
        "GET", f"/issues/{issue.number}/comments", since="2999-01-01T00:00:00Z"
    )
    assert (status, none) == (200, [])
    _, every, _ = await client.call(
        "GET", f"/issues/{issue.number}/comments", since="2000-01-01T00:00:00Z"
    )
    assert [c["body"] for c in every] == ["old"]


async def test_manifest_code_converts_once_into_the_apps_credentials(sandbox: Sandbox) -> None:
    sandbox.state.add_manifest_code("abc123")
    url = f"{sandbox.url}/app-manifests/abc123/conversions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url) as response:
            body = await response.json()
            assert response.status == 201
        async with session.post(url) as again:
            assert again.status == 404
    assert body["id"] == sandbox.state.app.id
    assert body["pem"] == sandbox.state.private_key_pem
    assert body["webhook_secret"] == sandbox.state.app.webhook_secret
