"""`lsal-ops`: run Label Studio projects with the backend. LS URL and key come from the environment
(LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY: a legacy token or a personal access token).

    lsal-ops connect --title "Support tickets" --labels billing,bug,other --backend-url http://localhost:9090
    lsal-ops import tickets.csv --project 3 --text-field body
    lsal-ops generate --project 3 --dry-run
    lsal-ops status --project 3 --plot curve.png
    lsal-ops export --project 3 --out labels.jsonl

Every command is safe to run twice: connect reuses the project and the connection, import and generate
skip what the project already holds.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from backend import kinds
from backend.kinds.classification import CLASSIFICATION
from backend.labeling import UnsupportedLabelConfig
from backend.labeling.templates import render
from backend.labelstudio import LabelStudio, LabelStudioError
from backend.settings import Settings, get_settings
from sdk_scripts.backend_client import Backend, BackendError
from sdk_scripts.readers import InputError, Record

# beside the package in a checkout; in the Docker image the package is installed and the templates are in /app
TEMPLATE_DIRS = (Path(__file__).resolve().parents[1] / "label_configs", Path.cwd() / "label_configs")
TEMPLATE_FILES = {"single": "text_classification_single.xml", "multi": "text_classification_multi.xml"}
UNCERTAINTY_SAMPLING = "Uncertainty sampling"


class UsageError(RuntimeError):
    """Bad arguments the parser could not catch; the message says what to do."""


def _ls(settings: Settings) -> LabelStudio:
    return LabelStudio(settings.label_studio_url or "", settings.label_studio_api_key or "")


def _backend_auth(settings: Settings, user: str | None, password: str | None) -> tuple[str, str] | None:
    user, password = user or settings.basic_auth_user, password or settings.basic_auth_pass
    return (user, password) if user and password else None


def _say(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


# -- connect ------------------------------------------------------------------------------------


def connect(args: argparse.Namespace, settings: Settings) -> int:
    ls = _ls(settings)
    project_id = args.project
    if project_id is None:
        if not args.title or not args.labels:
            raise UsageError("give --project ID, or --title and --labels to create (or reuse) a project")
        project_id = _project_from_template(ls, args.title, args.labels, args.template, args.text_field)
    else:
        kinds.parse(ls.label_config(project_id))  # a wrong id, a refused key, an unusable config: now
    backend_url = args.backend_url or settings.lsal_backend_url
    if not backend_url:
        raise UsageError("give --backend-url (the backend's URL as Label Studio reaches it) or set LSAL_BACKEND_URL")
    auth = _backend_auth(settings, args.backend_user, args.backend_password)
    secret = args.webhook_secret or settings.webhook_secret
    headers = {"X-Webhook-Secret": secret} if secret else {}
    if not headers and auth:
        headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}
    backend_id = ls.connect_backend(project_id, backend_url, title=args.connection_title, basic_auth=auth,
                                    webhook_headers=headers)  # fmt: skip
    print(f"project {project_id}: backend {backend_url} connected (ML backend id {backend_id});")
    print(f"webhook {backend_url.rstrip('/')}/webhook sends {'credentials' if headers else 'no credentials'}")
    Backend(backend_url, auth).set_queue(project_id, args.queue)  # the backend ranks only where this says so
    if args.queue:
        version, _ = ls.project_settings(project_id)
        ls.set_model_version(project_id, version or "", sampling=UNCERTAINTY_SAMPLING)
        print(f"queue: Label Studio serves the backend's ranking ({UNCERTAINTY_SAMPLING})")
    else:
        print("queue: off for this project; the backend leaves LS's task order and sampling alone")
    return 0


def _project_from_template(ls: LabelStudio, title: str, labels: str, template: str, text_field: str | None) -> int:
    names = [label.strip() for label in labels.split(",") if label.strip()]
    if template in TEMPLATE_FILES:
        found = [d / TEMPLATE_FILES[template] for d in TEMPLATE_DIRS if (d / TEMPLATE_FILES[template]).is_file()]
        path = found[0] if found else Path(TEMPLATE_FILES[template])
    else:
        path = Path(template)
    if not path.is_file():
        raise UsageError(f"no template {template!r}: use {', '.join(TEMPLATE_FILES)} or a path to an XML file")
    config = render(path.read_text(), names, text_field)
    kinds.parse(config)
    for project in ls.projects():
        if project["title"] == title:
            existing = kinds.parse(ls.label_config(project["id"]))
            if set(existing.labels) != set(names):
                raise UsageError(f"project {project['id']} is already called {title!r} with the labels "
                                 f"{', '.join(existing.labels)}; pick another --title or the same labels")  # fmt: skip
            print(f"project {project['id']} ({title!r}) exists: reusing it")
            return int(project["id"])
    project_id = ls.create_project(title, config)
    print(f"project {project_id} ({title!r}) created from {path.name} with labels {', '.join(names)}")
    return project_id


# -- import ------------------------------------------------------------------------------------


def import_(args: argparse.Namespace, settings: Settings) -> int:
    from sdk_scripts.importing import import_file

    def bar(records: Iterable[Record]) -> Iterable[Record]:
        return tqdm(records, desc=f"importing {args.file.name}", unit=" rows", disable=args.quiet)

    summary = import_file(_ls(settings), args.project, args.file, args.format, args.encoding, args.text_field,
                          args.id_field, args.batch_size, args.max_chars, bar)  # fmt: skip
    _say(summary.lines())
    return 1 if summary.stopped else 0


# -- generate ----------------------------------------------------------------------------------


def generate(args: argparse.Namespace, settings: Settings) -> int:
    from backend.llm.cache import DiskCache
    from backend.llm.factory import llm_client
    from backend.synthetic.generate import GenerateOptions, generate, plan_generation
    from sdk_scripts.importing import keys_of

    settings = _generator_settings(settings, args.llm_url, args.model)
    model = settings.llm_model
    try:
        price = settings.llm_price()  # the embedded model: $0 a token
    except KeyError as exc:
        raise UsageError(exc.args[0]) from exc
    ls = _ls(settings)
    label_config = ls.label_config(args.project)
    kind = kinds.kind_for(label_config)
    if kind is not CLASSIFICATION:  # synthetic tasks are written for labels, not for spans
        raise UsageError(f"generate writes synthetic tasks for classification projects; project {args.project} "
                         f"is a {kind.name} project")  # fmt: skip
    spec = kind.parse(label_config)
    tasks = list(ls.iter_full_tasks(args.project))
    human = kind.examples(spec, tasks)
    options = GenerateOptions(targets=args.targets, per_target=args.per_target, per_call=args.per_call,
                              label=args.label, check=not args.no_check, max_dollars=args.max_dollars,
                              seed=args.seed)  # fmt: skip
    try:
        plan = plan_generation(spec, args.project, human, model, price, options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    _say(plan.lines())
    if args.dry_run:
        print("dry run: nothing was asked of the LLM and nothing was created")
        return 0
    cache = DiskCache(settings.data_dir / "llm-cache" / f"generate-{model.replace('/', '_')}.json")
    # run by hand, not a job: no job wait budget
    client = llm_client(settings, cache=cache, wait_budget=None)
    if client is None:
        raise UsageError("no LLM endpoint: set LLM_BASE_URL (or pass --llm-url) to an OpenAI-compatible server, "
                         "e.g. the one `make run` starts at http://127.0.0.1:9091/v1")  # fmt: skip
    texts = [t for task in tasks if (t := spec.text_of(task["data"]))]
    bar = tqdm(total=len(plan.calls), desc="generating", unit=" requests", disable=args.quiet)

    def progress(message: str) -> None:
        if message.startswith("request"):
            bar.update(1)
        bar.set_postfix_str(message[:60])

    try:
        report = generate(plan, spec, client, price, texts, keys_of(tasks, spec.data_key),
                          lambda batch: ls.import_tasks(args.project, batch), options, progress=progress)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        bar.close()
        cache.save()
    _say(report.lines())
    return 0


def _generator_settings(settings: Settings, llm_url: str | None, model: str | None) -> Settings:
    """The settings with --llm-url and --model in place of LLM_BASE_URL and LLM_MODEL. LLM_ENABLED is left
    out: it switches the server's pre-annotation, not a generation asked for by hand."""
    update: dict[str, Any] = {"llm_enabled": True}
    if llm_url:
        update["llm_base_url"] = llm_url
    if model:
        update["llm_model"] = model
    return settings.model_copy(update=update)


# -- status and export -------------------------------------------------------------------------


def status(args: argparse.Namespace, settings: Settings) -> int:
    from sdk_scripts.status import learning_curve_png, project_status

    url = args.backend_url or settings.lsal_backend_url
    backend = Backend(url, _backend_auth(settings, args.backend_user, args.backend_password)) if url else None
    result = project_status(_ls(settings), args.project, backend)
    _say(result.lines())
    if args.plot:
        rounds: list[dict[str, Any]] = list((result.backend.get("queue") or {}).get("rounds") or [])
        if not rounds:
            print(f"no learning curve yet: {result.backend_error or 'the backend has recorded no rounds'}")
            return 1
        learning_curve_png(rounds, args.plot, f"project {args.project}: {result.title}")
        print(f"learning curve: {args.plot}")
    return 0


def export(args: argparse.Namespace, settings: Settings) -> int:
    from sdk_scripts.exporting import export_rows, write_rows

    ls = _ls(settings)
    spec = kinds.parse(ls.label_config(args.project))
    fmt = args.format or ("csv" if args.out.suffix.lower() == ".csv" else "jsonl")
    counts = write_rows(export_rows(spec, ls.iter_full_tasks(args.project), args.with_llm), args.out, fmt)
    total = sum(counts.values())
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing labelled yet"
    print(f"exported {total} labelled tasks to {args.out} ({detail})")
    return 0


# -- the parser ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="lsal-ops", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    con = sub.add_parser("connect", help="create or reuse a project, connect the backend with an authenticated "
                         "webhook, turn the active-learning queue on")  # fmt: skip
    con.add_argument("--project", type=int, help="an existing project's id (else --title and --labels)")
    con.add_argument("--title", help="create, or reuse, the project with this title")
    con.add_argument("--labels", help="comma-separated labels for a new project")
    con.add_argument("--template", default="single", help="single, multi, or a path to a label config XML")
    con.add_argument("--text-field", default=None, help="the task data field holding the text (default: text)")
    con.add_argument("--backend-url", default=None, help="the backend's URL as LS reaches it (LSAL_BACKEND_URL)")
    con.add_argument("--connection-title", default="lsal", help="the connection's title in Label Studio")
    con.add_argument("--backend-user", default=None, help="default: BASIC_AUTH_USER")
    con.add_argument("--backend-password", default=None, help="default: BASIC_AUTH_PASS")
    con.add_argument("--webhook-secret", default=None, help="default: WEBHOOK_SECRET")
    con.add_argument("--no-queue", dest="queue", action="store_false",
                     help="leave LS's task order alone (default: LS serves the backend's ranking)")  # fmt: skip
    con.set_defaults(run=connect)

    imp = sub.add_parser("import", help="tasks from CSV, JSONL or JSON into a project")
    imp.add_argument("file", type=Path)
    imp.add_argument("--project", type=int, required=True)
    imp.add_argument("--format", choices=["csv", "jsonl", "json"], default=None, help="default: from the suffix")
    imp.add_argument("--encoding", default="utf-8-sig", help="the file's encoding (default UTF-8)")
    imp.add_argument("--text-field", default=None, help="the file's text field (default: the config's, e.g. text)")
    imp.add_argument("--id-field", default=None, help="a field identifying rows (default: the text identifies them)")
    imp.add_argument("--batch-size", type=int, default=500)
    imp.add_argument("--max-chars", type=int, default=100_000, help="longer texts are rejected")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(run=import_)

    gen = sub.add_parser("generate", help="synthetic tasks where the student is weak, flagged as synthetic")
    gen.add_argument("--project", type=int, required=True)
    gen.add_argument("--label", default=None, help="write for this label (default: the weakest ones)")
    gen.add_argument("--targets", type=int, default=3, help="weak labels or confused pairs to write for")
    gen.add_argument("--per-target", type=int, default=10, help="texts asked for per target")
    gen.add_argument("--per-call", type=int, default=5, help="texts per LLM request")
    gen.add_argument("--max-dollars", type=float, default=None, help="refuse a batch that may cost more")
    gen.add_argument("--no-check", action="store_true", help="keep texts the LLM cannot label as their target")
    gen.add_argument("--model", default=None, help="generator model (default: LLM_MODEL)")
    gen.add_argument("--llm-url", default=None, help="OpenAI-compatible endpoint (default: LLM_BASE_URL)")
    gen.add_argument("--seed", type=int, default=0, help="another seed asks for another batch")
    gen.add_argument("--dry-run", action="store_true", help="show the targets and the cost bound; create nothing")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=generate)

    sta = sub.add_parser("status", help="counts, model version, LLM spend and agreement, stopping signals")
    sta.add_argument("--project", type=int, required=True)
    sta.add_argument("--backend-url", default=None, help="default: LSAL_BACKEND_URL")
    sta.add_argument("--backend-user", default=None, help="default: BASIC_AUTH_USER")
    sta.add_argument("--backend-password", default=None, help="default: BASIC_AUTH_PASS")
    sta.add_argument("--plot", type=Path, default=None, help="write the learning curve to this PNG")
    sta.set_defaults(run=status)

    exp = sub.add_parser("export", help="labelled data with provenance (human / LLM / synthetic)")
    exp.add_argument("--project", type=int, required=True)
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--format", choices=["jsonl", "csv"], default=None, help="default: from the suffix")
    exp.add_argument("--with-llm", action="store_true", help="also LLM pre-labels no human has checked yet")
    exp.set_defaults(run=export)
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args, get_settings()))
    except (LabelStudioError, InputError, UnsupportedLabelConfig, UsageError, BackendError) as exc:
        print(f"lsal-ops {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
