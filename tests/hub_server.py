"""A small Hugging Face Hub on 127.0.0.1, held in memory, for tests that must not reach the internet.

A real HTTP server, not a mock of any client: huggingface_hub, transformers and peft talk to it over HTTP.
It speaks the part of the Hub's API that a push and a download use (read from huggingface_hub's hf_api.py,
_commit_api.py and file_download.py):

    POST /api/repos/create                       create a repo (409, still with a `url`, if it exists)
    POST /api/validate-yaml                      a README's header: accepted
    POST /api/models/{repo}/preupload/{rev}      every file is sent `regular`: no LFS, no Xet
    POST /api/models/{repo}/commit/{rev}         one commit from an NDJSON body
    POST /api/models/{repo}/branch/{branch}      create a branch
    GET  /api/models/{repo}[/revision/{rev}]     repo info: sha, siblings
    GET  /api/models/{repo}/tree/{rev}           the files (a repo of this Hub has no folders)
    HEAD|GET /{repo}/resolve/{rev}/{path}        file metadata and content

Writes need `Authorization: Bearer <token>` of a known user (401) and that user's namespace (403).
"""

import base64
import hashlib
import http.server
import json
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob, which the Hub reports as a file's `oid` and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        commit = self.commits.get(self.branches.get(revision, revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def add_commit(self, branch: str, files: dict[str, bytes]) -> Commit:
        seed = f"{self.branches.get(branch)}|{len(self.commits)}|" + "|".join(map(git_blob_id, files.values()))
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), files)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class HubError(Exception):
    """An HTTP error answer, with the `X-Error-Code` that huggingface_hub maps to its exception types."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """`with HubServer({token: user}) as hub:`; `hub.url` is the endpoint. Every request path is kept in `requests`."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def pushed(self, repo_id: str) -> list[Commit]:
        """The commits made through the commit API, oldest first (not the repo's initial commit)."""
        return list(self.repos[repo_id].commits.values())[1:]

    def writer(self, authorization: str | None, repo_id: str) -> None:
        user = self.tokens.get((authorization or "").removeprefix("Bearer "))
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        if repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to create or write to {repo_id}")

    def find(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def create_repo(self, body: dict, authorization: str | None) -> tuple[int, dict]:
        user = self.tokens.get((authorization or "").removeprefix("Bearer "))
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        self.writer(authorization, repo_id)
        answer = {"url": f"{self.url}/{repo_id}", "name": repo_id}
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", **answer}
        self.repos[repo_id] = Repo(private=body.get("visibility") == "private" or bool(body.get("private")))
        self.repos[repo_id].add_commit("main", {".gitattributes": b""})
        return 200, answer

    def commit(self, repo_id: str, branch: str, ndjson: bytes) -> dict:
        repo = self.find(repo_id)
        if branch not in repo.branches:
            raise HubError(400, f"Can only commit to a branch, not to {branch}")
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        files = dict(repo.resolve(branch).files)
        for line in lines[1:]:
            if line["key"] != "file":
                raise HubError(400, f"this test Hub takes only regular files, not {line['key']!r}")
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        commit = repo.add_commit(branch, files)
        return {"success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{repo_id}/commit/{commit.oid}"}

    def route(self, method: str, parts: list[str], body: bytes, authorization: str | None) -> tuple[int, object, dict]:
        if method == "POST" and parts == ["api", "repos", "create"]:
            return *self.create_repo(json.loads(body), authorization), {}
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return 200, {"errors": [], "warnings": []}, {}
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            if method == "POST":
                self.writer(authorization, repo_id)
                if rest[:1] == ["preupload"]:
                    paths = [entry["path"] for entry in json.loads(body)["files"]]
                    return (
                        200,
                        {"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False} for p in paths]},
                        {},
                    )
                if rest[:1] == ["commit"]:
                    return 200, self.commit(repo_id, rest[1], body), {}
                if rest[:1] == ["branch"]:
                    repo = self.find(repo_id)
                    repo.branches.setdefault(rest[1], repo.branches["main"])
                    return 200, {}, {}
            commit = self.find(repo_id).resolve(rest[1] if rest[:1] in (["revision"], ["tree"]) else "main")
            if rest[:1] == ["tree"]:
                files = sorted(commit.files.items())
                return 200, [{"type": "file", "path": p, "size": len(d), "oid": git_blob_id(d)} for p, d in files], {}
            siblings = [{"rfilename": path, "size": len(data)} for path, data in sorted(commit.files.items())]
            private = self.find(repo_id).private
            return 200, {"id": repo_id, "sha": commit.oid, "siblings": siblings, "private": private}, {}
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            commit = self.find("/".join(parts[:2])).resolve(parts[3])
            data = commit.files.get("/".join(parts[4:]))
            if data is None:
                raise HubError(404, "Entry not found", "EntryNotFound")
            return 200, data, {"X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_id(data)}"'}
        raise HubError(404, f"no route for {method} /{'/'.join(parts)}")


def _handler_for(hub: HubServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
            pass

        def do_GET(self) -> None:
            self.serve()

        do_HEAD = do_POST = do_GET

        def body(self) -> bytes:
            """The request's body; huggingface_hub streams a commit's NDJSON in chunks."""
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def serve(self) -> None:
            path = urlsplit(self.path).path
            body = self.body() if self.command == "POST" else b""
            with hub.lock:
                hub.requests.append(f"{self.command} {path}")
                try:
                    parts = [unquote(part) for part in path.strip("/").split("/")]
                    status, payload, headers = hub.route(self.command, parts, body, self.headers.get("Authorization"))
                except HubError as err:
                    status, payload = err.status, {"error": err.message}
                    headers = {"X-Error-Message": err.message, **({"X-Error-Code": err.code} if err.code else {})}
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler
