"""The LLM the application talks to, and the prompts it sends.

``get_llm()`` returns an OpenAI-compatible model when ``OPENAI_API_KEY`` is set and the ``openai`` extra is
installed, otherwise ``OfflineLLM``: a deterministic rules-based model that needs no network, so the demo,
the tests and CI produce real, meaningful traces (with token counts) without credentials.

The prompts are built here too, because the offline model has to understand them: each prompt starts with
a task marker line (``### TASK: TRIAGE`` ...) and carries its inputs in ``<name>...</name>`` sections.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field

logger = logging.getLogger(__name__)

OFFLINE_MODEL_NAME = "offline-rules-1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

Task = Literal["triage", "draft", "verify", "revise"]
TASK_MARKERS: dict[Task, str] = {
    "triage": "### TASK: TRIAGE",
    "draft": "### TASK: DRAFT_REPLY",
    "verify": "### TASK: VERIFY_REPLY",
    "revise": "### TASK: REVISE_REPLY",
}

SIGN_OFF = "Best regards,\nThe Support Team"


# --------------------------------------------------------------------------------------------- prompts


def _section(name: str, text: str) -> str:
    # Neutralise a closing tag inside untrusted text so it cannot end the section early.
    safe = text.replace(f"</{name}>", f"< /{name}>")
    return f"<{name}>\n{safe}\n</{name}>"


def extract_section(prompt: str, name: str) -> str | None:
    """The text of the first ``<name>`` section of ``prompt``, or None."""
    match = re.search(rf"<{name}>\n(.*?)\n</{name}>", prompt, flags=re.DOTALL)
    return match.group(1) if match else None


def detect_task(prompt: str) -> Task | None:
    """Which task a prompt asks for, from its first non-blank line."""
    first = prompt.lstrip().split("\n", 1)[0].strip()
    for task, marker in TASK_MARKERS.items():
        if first == marker:
            return task
    return None


def format_email(sender: str, subject: str, body: str) -> str:
    """The email as the prompts show it."""
    return f"From: {sender}\nSubject: {subject}\n\n{body}"


_TOOLS_HELP = """\
- lookup_faq {"query": str}: search the company FAQ; use for questions.
- create_ticket {"priority": "low"|"normal"|"high", "title": str}: open a support ticket; use for \
complaints and urgent problems.
- propose_meeting_slots {"count": int, "duration_minutes": int}: propose meeting times; use for meeting \
requests.
- flag_spam {"reason": str}: mark the email as spam; use for spam only, with no reply.
- draft_reply {}: draft the reply from the facts gathered by the earlier steps; put it last."""


def triage_prompt(email_text: str) -> str:
    """Ask for a category, priority, summary and a tool plan, as JSON."""
    return (
        f"{TASK_MARKERS['triage']}\n"
        "You triage incoming customer emails. Classify the email and plan the tool calls needed to "
        "answer it.\n"
        'Reply with ONLY a JSON object: {"category": "question"|"complaint"|"meeting_request"|"spam"|'
        '"urgent"|"other", "priority": "low"|"normal"|"high", "summary": "<one sentence>", '
        '"plan": [{"tool": "<tool name>", "args": {...}}]}\n'
        f"Tools:\n{_TOOLS_HELP}\n\n"
        f"{_section('email', email_text)}\n"
    )


def draft_prompt(email_text: str, category: str, facts: list[dict[str, Any]]) -> str:
    """Ask for a reply that uses the facts gathered by the tools."""
    return (
        f"{TASK_MARKERS['draft']}\n"
        "Write a short, polite reply to the email below. Start with a greeting, use only the facts "
        "given (ticket ids, FAQ answers, meeting slots), and end with a sign-off. Reply with the email "
        "text only.\n\n"
        f"{_section('category', category)}\n"
        f"{_section('facts', json.dumps(facts, ensure_ascii=False))}\n"
        f"{_section('email', email_text)}\n"
    )


def verify_prompt(email_text: str, category: str, facts: list[dict[str, Any]], draft: str) -> str:
    """Ask whether the draft answers the email correctly, as JSON ``{ok, issues}``."""
    return (
        f"{TASK_MARKERS['verify']}\n"
        "Check the draft reply against the email and the facts. It must greet the sender, address the "
        "request, mention any ticket id and proposed meeting times from the facts, invent nothing, and "
        'end with a sign-off. Reply with ONLY JSON: {"ok": true|false, "issues": ["..."]}\n\n'
        f"{_section('category', category)}\n"
        f"{_section('facts', json.dumps(facts, ensure_ascii=False))}\n"
        f"{_section('email', email_text)}\n"
        f"{_section('draft', draft)}\n"
    )


def revise_prompt(
    email_text: str, category: str, facts: list[dict[str, Any]], draft: str, issues: list[str]
) -> str:
    """Ask for a corrected draft that fixes the verifier's issues."""
    return (
        f"{TASK_MARKERS['revise']}\n"
        "Revise the draft reply so that it fixes every issue listed. Keep it short and polite, use only "
        "the facts given, and reply with the email text only.\n\n"
        f"{_section('category', category)}\n"
        f"{_section('facts', json.dumps(facts, ensure_ascii=False))}\n"
        f"{_section('issues', json.dumps(issues, ensure_ascii=False))}\n"
        f"{_section('email', email_text)}\n"
        f"{_section('draft', draft)}\n"
    )


# --------------------------------------------------------------------------------- offline rules


def count_tokens(text: str) -> int:
    """Deterministic token count: whitespace-separated words."""
    return len(text.split())


_SPAM_TERMS = ("lottery", "winner", "you have won", "crypto", "bitcoin", "click here", "prize", "free money")
_URGENT_TERMS = ("urgent", "asap", "outage", "emergency", "immediately", "is down", "critical")
_COMPLAINT_TERMS = (
    "refund",
    "broken",
    "angry",
    "disappointed",
    "terrible",
    "unacceptable",
    "complaint",
    "damaged",
    "not working",
    "worst",
)
_MEETING_TERMS = ("meeting", "schedule", "calendar", "availability", "catch up", "book a time", "call next")
_QUESTION_TERMS = ("how", "what", "where", "when", "which", "why", "can i", "could you", "is it possible")


def _matches(text: str, terms: Sequence[str]) -> list[str]:
    return [term for term in terms if re.search(rf"\b{re.escape(term)}\b", text)]


def _parse_email_text(email_text: str) -> tuple[str, str, str]:
    head, _, body = email_text.partition("\n\n")
    sender = subject = ""
    for line in head.splitlines():
        if line.startswith("From:"):
            sender = line[len("From:") :].strip()
        elif line.startswith("Subject:"):
            subject = line[len("Subject:") :].strip()
    return sender, subject, body


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _offline_triage(prompt: str) -> str:
    _sender, subject, body = _parse_email_text(extract_section(prompt, "email") or "")
    text = f"{subject}\n{body}".lower()
    query = _shorten(f"{subject} {body}", 300)
    title = _shorten(subject or body, 120)
    plan: list[dict[str, Any]]
    if spam := _matches(text, _SPAM_TERMS):
        category, priority = "spam", "low"
        plan = [{"tool": "flag_spam", "args": {"reason": "matched: " + ", ".join(spam)}}]
    elif _matches(text, _URGENT_TERMS):
        category, priority = "urgent", "high"
        plan = [
            {"tool": "create_ticket", "args": {"priority": "high", "title": title}},
            {"tool": "draft_reply", "args": {}},
        ]
    elif _matches(text, _COMPLAINT_TERMS):
        category, priority = "complaint", "normal"
        plan = [
            {"tool": "create_ticket", "args": {"priority": "normal", "title": title}},
            {"tool": "draft_reply", "args": {}},
        ]
    elif _matches(text, _MEETING_TERMS):
        category, priority = "meeting_request", "normal"
        plan = [
            {"tool": "propose_meeting_slots", "args": {"count": 3, "duration_minutes": 30}},
            {"tool": "draft_reply", "args": {}},
        ]
    elif "?" in text or _matches(text, _QUESTION_TERMS):
        category, priority = "question", "normal"
        plan = [{"tool": "lookup_faq", "args": {"query": query}}, {"tool": "draft_reply", "args": {}}]
    else:
        category, priority = "other", "low"
        plan = [{"tool": "draft_reply", "args": {}}]
    label = category.replace("_", " ").capitalize()
    summary = f"{label} about {_shorten(subject, 100)!r}" if subject else f"{label}: {_shorten(body, 100)}"
    triage = {"category": category, "priority": priority, "summary": summary, "plan": plan}
    return json.dumps(triage, ensure_ascii=False)


def _load_json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _facts(prompt: str) -> list[dict[str, Any]]:
    facts = _load_json(extract_section(prompt, "facts"), [])
    return [f for f in facts if isinstance(f, dict)] if isinstance(facts, list) else []


def _fact_output(facts: list[dict[str, Any]], tool: str) -> dict[str, Any] | None:
    for fact in facts:
        output = fact.get("output")
        if fact.get("tool") == tool and isinstance(output, dict):
            return output
    return None


_ROLE_ADDRESSES = frozenset(
    {"admin", "billing", "contact", "help", "info", "noreply", "oncall", "sales", "support", "team"}
)


def _first_name(sender: str) -> str:
    local = sender.split("@", 1)[0]
    name = re.split(r"[._+\-0-9]", local, maxsplit=1)[0].lower()
    return name.capitalize() if name.isalpha() and name not in _ROLE_ADDRESSES else "there"


def _slot_labels(facts: list[dict[str, Any]]) -> list[str]:
    slots = (_fact_output(facts, "propose_meeting_slots") or {}).get("slots", [])
    return [str(s["label"]) for s in slots if isinstance(s, dict) and "label" in s]


def _ticket(facts: list[dict[str, Any]]) -> dict[str, Any] | None:
    ticket = _fact_output(facts, "create_ticket")
    return ticket if ticket and "ticket_id" in ticket else None


def _core_paragraph(category: str, subject: str, facts: list[dict[str, Any]]) -> str:
    about = f" about “{subject}”" if subject else ""
    lines = [f"Thank you for your email{about}."]
    ticket = _ticket(facts)
    if category == "question":
        matches = (_fact_output(facts, "lookup_faq") or {}).get("matches", [])
        answers = [str(m["answer"]) for m in matches if isinstance(m, dict) and m.get("answer")]
        if answers:
            lines.append("Here is what should help:")
            lines.extend(f"- {answer}" for answer in answers)
        else:
            lines.append("A member of our team will look into your question and reply shortly.")
    elif category == "complaint":
        lines.append("I'm sorry about the trouble you have had.")
    elif category == "urgent":
        lines.append("We understand this is urgent and our team is looking into it now.")
    elif category == "meeting_request":
        labels = _slot_labels(facts)
        if labels:
            lines.append("I'd be happy to meet. Would one of these times work for you?")
            lines.extend(f"- {label}" for label in labels)
        else:
            lines.append("I'd be happy to meet; please send a few times that suit you.")
    else:
        lines.append("We have received your message and will get back to you if anything is needed.")
    if ticket:
        lines.append(
            f"We have opened ticket {ticket['ticket_id']} with {ticket.get('priority', 'normal')} priority "
            "and will keep you updated."
        )
    return "\n".join(lines)


def _compose(sender: str, core: str) -> str:
    return f"Hello {_first_name(sender)},\n\n{core.strip()}\n\n{SIGN_OFF}"


def _offline_draft(prompt: str) -> str:
    sender, subject, _ = _parse_email_text(extract_section(prompt, "email") or "")
    category = (extract_section(prompt, "category") or "other").strip()
    return _compose(sender, _core_paragraph(category, subject, _facts(prompt)))


_GREETINGS = ("hello", "hi", "dear", "good morning", "good afternoon")
_SIGN_OFFS = ("regards", "sincerely", "best", "thank you", "thanks", "cheers")


def review_draft(draft: str, facts: list[dict[str, Any]]) -> list[str]:
    """The offline verifier's rules; an empty list means the draft is fine."""
    text = draft.strip()
    if not text:
        return ["the draft is empty"]
    issues: list[str] = []
    first_line = text.splitlines()[0].strip().lower()
    if not first_line.startswith(_GREETINGS):
        issues.append("the draft does not greet the sender")
    last_lines = "\n".join(text.splitlines()[-3:]).lower()
    if not any(word in last_lines for word in _SIGN_OFFS):
        issues.append("the draft has no sign-off")
    ticket = _ticket(facts)
    if ticket and str(ticket["ticket_id"]) not in text:
        issues.append(f"the draft does not mention ticket {ticket['ticket_id']}")
    labels = _slot_labels(facts)
    if labels and not any(label in text for label in labels):
        issues.append("the draft does not propose the meeting slots")
    return issues


def _offline_verify(prompt: str) -> str:
    issues = review_draft(extract_section(prompt, "draft") or "", _facts(prompt))
    return json.dumps({"ok": not issues, "issues": issues}, ensure_ascii=False)


_GREETING_LINE = re.compile(r"^(hello|hi|dear|good morning|good afternoon)\b.*$", re.IGNORECASE)


def _offline_revise(prompt: str) -> str:
    sender, subject, _ = _parse_email_text(extract_section(prompt, "email") or "")
    category = (extract_section(prompt, "category") or "other").strip()
    facts = _facts(prompt)
    lines = [ln for ln in (extract_section(prompt, "draft") or "").strip().splitlines()]
    if lines and _GREETING_LINE.match(lines[0].strip()):
        lines = lines[1:]
    # Drop an existing sign-off block (the last lines containing a sign-off word) before adding ours.
    while lines and (not lines[-1].strip() or any(w in lines[-1].lower() for w in _SIGN_OFFS)):
        lines.pop()
    if lines and lines[-1].strip().lower().startswith("the support team"):
        lines.pop()
    core = "\n".join(lines).strip()
    if not core:
        core = _core_paragraph(category, subject, facts)
    ticket = _ticket(facts)
    if ticket and str(ticket["ticket_id"]) not in core:
        core += f"\nYour reference is ticket {ticket['ticket_id']}."
    labels = _slot_labels(facts)
    if labels and not any(label in core for label in labels):
        core += "\nWould one of these times work for you?\n" + "\n".join(f"- {label}" for label in labels)
    return _compose(sender, core)


def offline_answer(prompt: str) -> str:
    """What ``OfflineLLM`` answers to ``prompt``: pure, deterministic, no I/O."""
    task = detect_task(prompt)
    if task == "triage":
        return _offline_triage(prompt)
    if task == "draft":
        return _offline_draft(prompt)
    if task == "verify":
        return _offline_verify(prompt)
    if task == "revise":
        return _offline_revise(prompt)
    return (
        "I am an offline rules-based model. I can triage, draft, verify and revise replies to emails "
        "when prompted by the email workflow."
    )


def _usage(prompt_text: str, completion_text: str) -> dict[str, dict[str, int]]:
    prompt_tokens, completion_tokens = count_tokens(prompt_text), count_tokens(completion_text)
    return {
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    }


def _messages_text(messages: Sequence[ChatMessage]) -> tuple[str, str]:
    """(all message text, for token counting; the last user message, which carries the task)."""
    texts = [m.content or "" for m in messages]
    user = [m.content or "" for m in messages if m.role == MessageRole.USER]
    return "\n".join(texts), (user[-1] if user else "\n".join(texts))


class OfflineLLM(CustomLLM):
    """A deterministic rules-based LLM: no network, real answers, real token counts.

    ``complete``, ``acomplete``, ``chat`` and ``achat`` are each implemented natively under the
    LlamaIndex callback decorators (never delegating to ``complete``), so every call produces exactly one
    OpenInference LLM span carrying ``llm.token_count.*``; delegating would nest 2-3 LLM spans per call
    and count the tokens 2-3 times in Langfuse's cost totals.
    """

    model: str = Field(default=OFFLINE_MODEL_NAME, description="Reported as llm.model_name.")

    @classmethod
    def class_name(cls) -> str:
        return "OfflineLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, context_window=32_768, num_output=1024, is_chat_model=False)

    def _completion(self, prompt: str) -> CompletionResponse:
        text = offline_answer(prompt)
        return CompletionResponse(text=text, raw=_usage(prompt, text))

    def _chat(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        all_text, task_text = _messages_text(messages)
        text = offline_answer(task_text)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw=_usage(all_text, text)
        )

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._completion(prompt)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._completion(prompt)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Iterator[CompletionResponse]:
        full = self._completion(prompt)

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            words = full.text.split(" ")
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                text += delta
                last = i == len(words) - 1
                yield CompletionResponse(text=text, delta=delta, raw=full.raw if last else None)

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages)


# ------------------------------------------------------------------------------------------ choice


def get_llm() -> LLM:
    """The application's LLM: OpenAI-compatible when configured, ``OfflineLLM`` otherwise.

    Environment: ``OPENAI_API_KEY`` (enables the online model), ``OPENAI_BASE_URL`` (any OpenAI-compatible
    server), ``OPENAI_MODEL`` (default ``gpt-4o-mini``), and ``BASIC_LLM=offline`` to force the offline
    model even when a key is present (demos, tests).
    """
    choice = os.environ.get("BASIC_LLM", "auto").strip().lower()
    if choice == "offline":
        return OfflineLLM()
    api_key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not api_key:
        if choice == "openai":
            logger.warning("BASIC_LLM=openai but OPENAI_API_KEY is not set; using the offline LLM")
        return OfflineLLM()
    model = os.environ.get("OPENAI_MODEL", "").strip() or DEFAULT_OPENAI_MODEL
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip() or None
    try:
        return _openai_llm(api_key=api_key, model=model, base_url=base_url)
    except ImportError:
        logger.warning(
            "OPENAI_API_KEY is set but llama-index-llms-openai is not installed "
            "(pip install 'otel-basic[openai]'); using the offline LLM"
        )
        return OfflineLLM()


def _openai_llm(*, api_key: str, model: str, base_url: str | None) -> LLM:
    """Build the online model; imported lazily because it is an optional extra."""
    if base_url is not None:
        # A custom server usually serves model names the OpenAI class does not know (it would fail to
        # look up their context window); OpenAILike accepts any name, when installed.
        try:
            from llama_index.llms.openai_like import OpenAILike

            llm: LLM = OpenAILike(
                model=model,
                api_key=api_key,
                api_base=base_url,
                is_chat_model=True,
                # Tool calling, so the same model also drives a FunctionAgent (basic.agent).
                is_function_calling_model=True,
                context_window=128_000,
                timeout=30.0,
                max_retries=2,
            )
            return llm
        except ImportError:
            pass
    from llama_index.llms.openai import OpenAI

    kwargs: dict[str, Any] = {"model": model, "api_key": api_key, "timeout": 30.0, "max_retries": 2}
    if base_url is not None:
        kwargs["api_base"] = base_url
    openai_llm: LLM = OpenAI(**kwargs)
    return openai_llm
