"""Why fine-tune at all: refuse knowledge goals and volatile tasks (DOMAIN.md, 'The decision')."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler.checked import CheckedSpec
from ftc.compiler.rules.base import ERROR, Hit, rule


@rule("FT101", "knowledge-goal", ERROR)
def knowledge_goal(c: CheckedSpec) -> Iterator[Hit]:
    """Refuses a spec whose goal is knowledge.

    Why:
    Fine-tuning is for behaviour (format, style, a narrow skill), not for knowledge: weights store
    facts poorly, cannot cite sources, and cannot update one fact without retraining. Put private
    documents and changing facts behind retrieval instead.

    Example:
        intent { goal knowledge; stability stable; owner "ml-team" }

    Use instead:
        intent { goal behavior; stability stable; owner "ml-team" }
    """
    intent = c.spec.intent
    if intent is not None and intent.goal == "knowledge":
        yield Hit("fine-tuning for knowledge is refused: weights store facts poorly and cannot cite or update them",
                  intent.at("goal"),
                  help="serve the facts through retrieval (RAG); fine-tune only for behavior, format or style")


@rule("FT102", "volatile-task", ERROR)
def volatile_task(c: CheckedSpec) -> Iterator[Hit]:
    """Refuses a task whose labels or rules change often (`stability volatile`).

    Why:
    A task whose labels or rules change weekly should not be baked into weights: every change
    means a new dataset and a new training run. Build a workflow (rules in code, a prompt, a
    lookup) and keep business rules out of the model.

    Example:
        intent { goal behavior; stability volatile; owner "ml-team" }

    Use instead:
        intent { goal behavior; stability stable; owner "ml-team" }
    """
    intent = c.spec.intent
    if intent is not None and intent.stability == "volatile":
        yield Hit("a volatile task is refused: its labels or rules change faster than models can be retrained",
                  intent.at("stability"),
                  help="build a workflow (rules in code, prompting, retrieval); fine-tune once the task is stable")
