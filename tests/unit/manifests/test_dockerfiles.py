from __future__ import annotations

from clrk.manifests.dockerfiles import CopiedFile, parse_dockerfile


def test_final_stage_entrypoint_cmd_and_copies() -> None:
    image = parse_dockerfile(
        "FROM node:22-alpine AS base\n"
        "RUN apk add --no-cache jq \\\n    && npm i -g @anthropic-ai/claude-code\n"
        "ENV ANTHROPIC_API_KEY=placeholder\n"
        "FROM base\n"
        "WORKDIR /app\n"
        "COPY --chown=1000 agent.sh lib/ ./\n"
        "COPY --from=builder /out/bin /usr/bin/tool\n"
        'ENTRYPOINT ["/app/agent.sh"]\n'
    )
    assert image.argv == ["/app/agent.sh"]
    assert image.copies == [CopiedFile("agent.sh", "/app/agent.sh"), CopiedFile("lib/", "/app/lib")]
    assert any("claude-code" in line for line in image.run)
    assert image.env == {"ANTHROPIC_API_KEY": "placeholder"}


def test_entrypoint_resets_cmd_and_shell_form() -> None:
    image = parse_dockerfile('FROM alpine\nCMD ["x"]\nENTRYPOINT exec /run.sh\n')
    assert image.argv == ["/bin/sh", "-c", "exec /run.sh"]
    assert parse_dockerfile('FROM alpine\nENTRYPOINT ["/a"]\nCMD ["b"]\n').argv == ["/a", "b"]


def test_copy_to_file_destination() -> None:
    image = parse_dockerfile("FROM alpine\nCOPY agent.sh /usr/local/bin/agent\n")
    assert image.copies == [CopiedFile("agent.sh", "/usr/local/bin/agent")]
