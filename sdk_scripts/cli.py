"""`lsal-ops`: operate Label Studio projects with the backend. LS URL and key come from the environment.

    LABEL_STUDIO_URL=http://localhost:8080 LABEL_STUDIO_API_KEY=... lsal-ops connect --project 3 \\
        --backend-url http://localhost:9090

`connect` is safe to run twice: it reuses the connection and replaces the webhook.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence

from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import get_settings


def _ls() -> LabelStudio:
    settings = get_settings()
    return LabelStudio(settings.label_studio_url or "", settings.label_studio_api_key or "")


def connect(args: argparse.Namespace) -> int:
    settings = get_settings()
    user = args.backend_user or settings.basic_auth_user
    password = args.backend_password or settings.basic_auth_pass
    secret = args.webhook_secret or settings.webhook_secret
    headers = {"X-Webhook-Secret": secret} if secret else {}
    if not headers and user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
    ls = _ls()
    ls.label_config(args.project)  # fails clearly on a wrong project id or a refused key
    backend_id = ls.connect_backend(
        args.project,
        args.backend_url,
        title=args.title,
        basic_auth=(user, password) if user and password else None,
        webhook_headers=headers,
    )
    print(f"project {args.project}: backend {args.backend_url} connected (ML backend id {backend_id});")
    print(f"webhook {args.backend_url.rstrip('/')}/webhook sends {'credentials' if headers else 'no credentials'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lsal-ops", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    con = sub.add_parser("connect", help="connect the backend to a project, with an authenticated webhook")
    con.add_argument("--project", type=int, required=True, help="Label Studio project id")
    con.add_argument("--backend-url", required=True, help="the backend's URL as Label Studio reaches it")
    con.add_argument("--title", default="lsal", help="the connection's title in Label Studio")
    con.add_argument("--backend-user", default=None, help="default: BASIC_AUTH_USER")
    con.add_argument("--backend-password", default=None, help="default: BASIC_AUTH_PASS")
    con.add_argument("--webhook-secret", default=None, help="default: WEBHOOK_SECRET")
    args = parser.parse_args(argv)
    try:
        return connect(args)
    except LabelStudioError as exc:
        print(f"lsal-ops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
