"""``clrk apply``, ``delete``, ``get``, ``logs``, ``install``, ``build``, ``operator``: the cluster
path. Each command adapts its options to one core function in :mod:`clrk.cluster`; the options
that pick a cluster (``--kubeconfig``, ``--context``, ``-n``) mean what they mean to kubectl.
The kubernetes client is heavy, so :mod:`clrk.cluster` is imported inside each command, keeping
every other command quick to start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from clrk.cli.manifests import ClusterDomain, PathsOption, RuntimeImage, _load, dump_yaml
from clrk.cli.options import log_to_stderr, settings_from
from clrk.errors import SpecError
from clrk.manifests.loading import STDIN, load_documents
from clrk.manifests.options import PlatformSettings

Kubeconfig = Annotated[
    str | None, typer.Option("--kubeconfig", help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config).")
]
Context = Annotated[
    str | None, typer.Option("--context", help="The kubeconfig context to use (default: the current one).")
]
Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: default).")]
ApplySet = Annotated[
    str | None,
    typer.Option("--apply-set", help="Name of this set of manifests for --prune (default: derived from the -f paths)."),
]
IngressImage = Annotated[
    str | None,
    typer.Option(
        "--ingress-image",
        help="Image of the ingress and the operator [$CLRK_INGRESS_IMAGE; ghcr.io/clrk-dev/clrk-ingress:VERSION].",
    ),
]
EgressImage = Annotated[
    str | None,
    typer.Option(
        "--egress-image",
        help="Image of the egress gateway [$CLRK_EGRESS_IMAGE; ghcr.io/clrk-dev/clrk-egress:VERSION].",
    ),
]

KnativeNamespace = Annotated[
    str | None,
    typer.Option(
        "--knative-namespace",
        help="Where Knative Serving's activator and autoscaler run: they may call agent pods "
        "[$CLRK_KNATIVE_NAMESPACE; knative-serving].",
    ),
]
KnativeGatewayNamespace = Annotated[
    str | None,
    typer.Option(
        "--knative-gateway-namespace",
        help="Where the networking layer's gateway runs: it may call agent pods "
        "[$CLRK_KNATIVE_GATEWAY_NAMESPACE; kourier-system].",
    ),
]


def _sources(paths: list[str]) -> dict[tuple[str, str, str, str], str]:
    from clrk.cluster.planning import passthrough_sources

    return {} if STDIN in paths else passthrough_sources(load_documents(paths))


def apply(
    filename: PathsOption,
    dry_run: Annotated[
        Literal["none", "client", "server"], typer.Option("--dry-run", help="client: compile and check only.")
    ] = "none",
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete this set's objects no longer in the manifests.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every agent is Ready; print its URL.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 300.0,
    force_conflicts: Annotated[bool, typer.Option("--force-conflicts", help="Take over fields others manage.")] = False,
    apply_set: ApplySet = None,
    runtime_image: RuntimeImage = None,
    cluster_domain: ClusterDomain = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Apply manifests to the cluster (server-side apply, field manager clrk).

    Agents are compiled for the platform as installed: --runtime-image and --cluster-domain (or
    $CLRK_*) when given, else what `clrk install` recorded (ConfigMap clrk-system/clrk-platform)."""
    from clrk.cluster import ApplyOptions, apply_plan, apply_set_id, connect, plan_apply, wait_ready
    from clrk.cluster.installing import platform_options

    bundle, name = _load(filename), apply_set_id(filename, apply_set)
    platform = settings_from(PlatformSettings, runtime_image=runtime_image, cluster_domain=cluster_domain)
    cluster = connect(kubeconfig, context) if dry_run != "client" else None
    compiled = platform_options(cluster, platform) if cluster is not None else platform.options()
    plan = plan_apply(bundle, name, compiled, passthrough_sources=_sources(filename))
    if cluster is None:
        for item in plan.items:
            typer.echo(f"{item.what} (client dry run)")
        return
    options = ApplyOptions(
        dry_run="server" if dry_run == "server" else "none",
        prune=prune,
        force_conflicts=force_conflicts,
        namespace=namespace or "default",
        platform=compiled,
    )
    apply_plan(cluster, plan, options, typer.echo)
    if wait and dry_run == "none" and plan.agent_services:
        wait_ready(cluster, plan.agent_services, typer.echo, timeout=timeout)


def delete(filename: PathsOption, kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Delete what the manifests created: compiled objects, then the clrk objects."""
    from clrk.cluster import apply_set_id, connect, delete_plan, plan_apply

    plan = plan_apply(_load(filename), apply_set_id(filename))
    delete_plan(connect(kubeconfig, context), plan, typer.echo)


def get(
    what: Annotated[str, typer.Argument(help="taskagents (ta)")],
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """List TaskAgents with their readiness and URL."""
    from clrk.cluster import connect, format_table, list_agents

    if what not in ("taskagents", "taskagent", "ta"):
        raise SpecError(what, "", "clrk get lists taskagents; use kubectl for other kinds")
    rows = list_agents(connect(kubeconfig, context), None if all_namespaces else namespace or "default")
    typer.echo(format_table(rows, namespaces=all_namespaces) if rows else "No TaskAgents found.")


def logs(
    name: Annotated[str, typer.Argument(help="The TaskAgent's name.")],
    tail: Annotated[int | None, typer.Option("--tail", help="Lines from the end of each pod's log.")] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Print the logs of the pods serving a TaskAgent (the shim's and the agent's stderr)."""
    from clrk.cluster import connect, pod_logs

    for pod, text in pod_logs(connect(kubeconfig, context), name, namespace or "default", tail):
        typer.echo(f"==> {pod} <==\n{text}", nl=not text.endswith("\n"))


def install(
    render: Annotated[bool, typer.Option("--render", help="Print the manifests instead of applying them.")] = False,
    runtime_image: RuntimeImage = None,
    ingress_image: IngressImage = None,
    egress_image: EgressImage = None,
    cluster_domain: ClusterDomain = None,
    knative_namespace: KnativeNamespace = None,
    knative_gateway_namespace: KnativeGatewayNamespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Install clrk onto a cluster that runs Knative Serving (and Eventing, for schedules and
    async invocations).

    Installs exactly the images, cluster domain and Knative namespaces given (or $CLRK_*, or the
    defaults), and records them for `clrk apply` and the operator. Generates the CA, the platform
    key and Redis's password once; raises Knative Serving's longest revision timeout to 3600 s."""
    from clrk.cluster import connect, installing
    from clrk.cluster.configs import install_objects
    from clrk.cluster.settings import platform_configmap

    settings = settings_from(
        PlatformSettings,
        runtime_image=runtime_image,
        ingress_image=ingress_image,
        egress_image=egress_image,
        cluster_domain=cluster_domain,
        knative_namespace=knative_namespace,
        knative_gateway_namespace=knative_gateway_namespace,
    )
    if render:
        options = settings.options()
        typer.echo(dump_yaml([*install_objects(options), platform_configmap(options)]), nl=False)
        return
    installing.install(connect(kubeconfig, context), typer.echo, settings)


def build(
    context: Annotated[Path, typer.Argument(help="The build context: a folder with a Dockerfile.")],
    push: Annotated[str | None, typer.Option("--push", help="Registry to push to, e.g. ghcr.io/me.")] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="Target platform (repeatable) (default: linux/amd64 and linux/arm64; with podman: this machine's).",
        ),
    ] = None,
    filename: Annotated[
        list[Path] | None,
        typer.Option("--filename", "-f", help="Manifests to point at the pushed image (default: the context folder)."),
    ] = None,
    engine: Annotated[
        Literal["auto", "docker", "podman"],
        typer.Option("--engine", help="auto: Docker when an engine answers, else podman."),
    ] = "auto",
    insecure_registry: Annotated[
        bool, typer.Option("--insecure-registry", help="Push over plain HTTP, or without verifying TLS.")
    ] = False,
) -> None:
    """Build an image tagged by the content of CONTEXT; with --push, push it and pin the manifests to it."""
    from clrk.cluster.building import build_context

    def progress(line: str) -> None:  # podman's build output; buildx writes its own to the terminal
        typer.echo(line, err=True, nl=False)

    built = build_context(
        context,
        push,
        platform or None,
        filename or [context],
        typer.echo,
        engine=engine,
        insecure=insecure_registry,
        progress=progress,
    )
    typer.echo(built.image)


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only this namespace (repeatable) (default: all)."),
    ] = None,
    runtime_image: RuntimeImage = None,
    cluster_domain: ClusterDomain = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Reconcile TaskAgents and TaskSchedules applied by other tools (kubectl, Argo CD, Flux) until stopped."""
    from clrk.cluster.operating import run_operator  # kopf is heavy: import it only here

    settings = settings_from(PlatformSettings, runtime_image=runtime_image, cluster_domain=cluster_domain)
    run_operator(kubeconfig, context, namespace or [], settings)


def ingress(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1; the Deployment: 0.0.0.0].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [18080; the Deployment: 8080].")] = None,
    auth: Annotated[
        Literal["auto", "open", "keys"] | None,
        typer.Option(help="Caller authentication; auto = open on loopback, Caller keys elsewhere."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between re-reads of TaskAgents and Callers.")] = 5.0,
    cluster_domain: ClusterDomain = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Serve the ingress in a cluster: route to each TaskAgent's Knative Service over HTTP.
    Callers' keySecretRef Secrets are read through the API server, from each Caller's namespace.
    With $CLRK_INGRESS_BROKER_URL and $CLRK_INGRESS_REDIS_URL (the Deployment sets both), it takes
    async invocations too: kept in Redis, carried by Knative Eventing's Broker, run on POST /_clrk/runs."""
    import asyncio

    from clrk.cluster import connect
    from clrk.cluster.routing import serve_ingress
    from clrk.ingress import IngressSettings

    settings = settings_from(IngressSettings, host=host, port=port, auth=auth)
    domain = settings_from(PlatformSettings, cluster_domain=cluster_domain).options().cluster_domain
    log_to_stderr()
    asyncio.run(serve_ingress(settings, connect(kubeconfig, context), domain, interval))
