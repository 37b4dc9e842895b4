"""Tests for falconer_assets.plan.planner: prompt building, code extraction, retry loop."""

from __future__ import annotations

import pytest

from falconer_assets.plan.sandbox import PlanRuntimeError, PlanValidationError, PrimitiveCall, validate_plan
from falconer_assets.plan.planner import (
    EXAMPLE_PLAN,
    PLANNER_SYSTEM_PROMPT,
    PlanAttempt,
    build_planner_messages,
    dry_run_plan,
    extract_code,
    plan_with_retries,
)

FIELDS = [{"name": "price", "description": "the laptop price"}]
INSTRUCTION = "Extract all laptop prices from positive Amazon reviews"

VALID_REPLY = f"Here is the plan:\n```python\n{EXAMPLE_PLAN}\n```\nDone."
IMPORT_REPLY = "```python\nimport os\n" + EXAMPLE_PLAN + "\n```"


class ScriptedChat:
    """A chat callable returning canned replies in order and recording the messages it got."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls: list[list[dict]] = []

    def __call__(self, messages):
        self.calls.append(messages)
        return self.replies[len(self.calls) - 1]


# --- extract_code -----------------------------------------------------------------------------

def test_extract_code_prefers_python_fence():
    reply = "Text\n```text\nnot code\n```\n```python\ndef plan(texts):\n    pass\n```\n```python\nx\n```"
    assert extract_code(reply) == "def plan(texts):\n    pass"


def test_extract_code_py_tag_case_insensitive():
    assert extract_code("```Python\na = 1\n```") == "a = 1"
    assert extract_code("```py\na = 1\n```") == "a = 1"


def test_extract_code_falls_back_to_any_fence():
    assert extract_code("See:\n```\nb = 2\n```\n") == "b = 2"


def test_extract_code_unclosed_fence_takes_the_rest():
    assert extract_code("```python\ndef plan(texts):\n    return 1\n") == "def plan(texts):\n    return 1"


def test_extract_code_whole_reply_when_no_fence():
    assert extract_code("\n  def plan(texts):\n      return 1\n\n") == "def plan(texts):\n    return 1"


def test_extract_code_keeps_inner_indentation():
    code = extract_code("```python\ndef plan(texts):\n    if texts:\n        pass\n```")
    assert code == "def plan(texts):\n    if texts:\n        pass"


@pytest.mark.parametrize("reply", ["", "   \n", "```python\n\n```"])
def test_extract_code_empty_raises(reply):
    with pytest.raises(PlanValidationError, match="no code"):
        extract_code(reply)


# --- prompt -----------------------------------------------------------------------------------

def test_system_prompt_examples_are_valid_plans():
    blocks = PLANNER_SYSTEM_PROMPT.split("```python\n")[1:]
    codes = [b.split("```")[0] for b in blocks if b.startswith("def ")]
    assert len(codes) == 4  # one per category of the paper's Table 1
    calls = [validate_plan(c).calls for c in codes]
    assert calls[0] == (PrimitiveCall("span", "Who is the speaker of the talk?"),)
    assert calls[1] == (PrimitiveCall("label", "Is this text message spam?"),
                        PrimitiveCall("span", "What phone number does the message give?"))
    assert [c.kind for c in calls[2]] == ["label", "label", "span", "span"]
    assert [c.kind for c in calls[3]] == ["span", "span"]
    for word in ("get_label", "get_span", "import", "and", "None"):
        assert word in PLANNER_SYSTEM_PROMPT


def test_build_planner_messages_contains_instruction_and_fields():
    fields = [{"name": "lecturer", "description": "name of the lecturer"}, {"name": "topic"}]
    msgs = build_planner_messages("Talks about both health and brain", fields)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == PLANNER_SYSTEM_PROMPT
    user = msgs[1]["content"]
    assert "Talks about both health and brain" in user
    assert "- lecturer: name of the lecturer" in user
    assert '"lecturer", "topic"' in user


def test_build_planner_messages_appends_feedback_turns():
    fb = [("reply one", "error one"), ("reply two", "error two")]
    msgs = build_planner_messages(INSTRUCTION, FIELDS, fb)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[2]["content"] == "reply one"
    assert "error one" in msgs[3]["content"]
    assert msgs[4]["content"] == "reply two"
    assert "error two" in msgs[5]["content"]


@pytest.mark.parametrize(
    "instruction, fields",
    [("", FIELDS), (INSTRUCTION, [{"description": "x"}]), (INSTRUCTION, [{"name": "a"}, {"name": "a"}])],
)
def test_build_planner_messages_rejects_bad_input(instruction, fields):
    with pytest.raises(ValueError):
        build_planner_messages(instruction, fields)


# --- retry loop -------------------------------------------------------------------------------

def test_plan_with_retries_recovers_on_second_attempt():
    chat = ScriptedChat([IMPORT_REPLY, VALID_REPLY])
    plan, attempts = plan_with_retries(chat, INSTRUCTION, FIELDS)
    assert plan.source == EXAMPLE_PLAN
    assert plan.calls[1] == PrimitiveCall("span", "What is the price of the laptop?")
    assert len(chat.calls) == 2
    assert [a.error is None for a in attempts] == [False, True]
    assert "Import" in attempts[0].error
    second = chat.calls[1]
    assert second[-2] == {"role": "assistant", "content": IMPORT_REPLY}
    assert attempts[0].error in second[-1]["content"]
    assert len(chat.calls[0]) == 2  # first call had no feedback


def test_plan_with_retries_all_invalid_lists_every_attempt():
    replies = [IMPORT_REPLY, "```python\ndef plan(texts):\n    return eval('1')\n```", "no code here"]
    chat = ScriptedChat(replies)
    with pytest.raises(PlanValidationError) as info:
        plan_with_retries(chat, INSTRUCTION, FIELDS, max_attempts=3)
    msg = str(info.value)
    assert "after 3 attempts" in msg
    assert "attempt 1:" in msg and "Import" in msg
    assert "attempt 2:" in msg and "'eval'" in msg
    assert "attempt 3:" in msg
    assert len(info.value.attempts) == 3
    assert all(isinstance(a, PlanAttempt) and a.error for a in info.value.attempts)
    assert len(chat.calls) == 3
    assert len(chat.calls[2]) == 2 + 2 * 2  # system, task, then two feedback pairs


def test_plan_with_retries_dry_run_rejects_wrong_field_name():
    wrong = "```python\n" + EXAMPLE_PLAN.replace('"price": spans', '"prices": spans') + "\n```"
    chat = ScriptedChat([wrong, VALID_REPLY])
    plan, attempts = plan_with_retries(chat, INSTRUCTION, FIELDS)
    assert "'prices'" in attempts[0].error
    assert plan.source == EXAMPLE_PLAN


def test_plan_with_retries_dry_run_catches_runtime_error():
    crashing = "```python\ndef plan(texts):\n    x = get_label(texts, 'Is it?')\n    return [x[99]]\n```"
    chat = ScriptedChat([crashing, VALID_REPLY])
    _, attempts = plan_with_retries(chat, INSTRUCTION, FIELDS)
    assert "IndexError" in attempts[0].error
    # without the dry run the same reply is accepted (it validates statically)
    plan, attempts = plan_with_retries(ScriptedChat([crashing]), INSTRUCTION, FIELDS, dry_run=False)
    assert attempts[0].error is None


def test_dry_run_allows_omitted_fields():
    src = ("def plan(texts):\n    s = get_span(texts, 'Who?')\n"
           "    return [{'name': x} if x else {} for x in s]\n")
    dry_run_plan(validate_plan(src), ["name", "age"])  # no error


def test_plan_with_retries_rejects_zero_attempts():
    with pytest.raises(ValueError):
        plan_with_retries(ScriptedChat([]), INSTRUCTION, FIELDS, max_attempts=0)


def test_dry_run_catches_yes_no_answers_used_as_indexes():
    # a real Qwen2.5-Coder-1.5B reply: valid Python, but it indexes texts with booleans
    buggy = '''def plan(texts):
    is_networking = get_label(texts, "Is this description about networking?")
    is_security = get_label(texts, "Is this description about security?")
    both = [a and b for a, b in zip(is_networking, is_security)]
    protocols = get_span([texts[i] for i in both], "What are the network protocols mentioned?")
    results = [None] * len(texts)
    for i, spans in zip(both, protocols):
        results[i] = {"protocol": spans}
    return results'''
    with pytest.raises(PlanRuntimeError, match="used as a list index"):
        dry_run_plan(validate_plan(buggy), ["protocol"])
    fixed = buggy.replace("[texts[i] for i in both]", "[texts[i] for i, ok in enumerate(both) if ok]").replace(
        "zip(both, protocols)", "zip([i for i, ok in enumerate(both) if ok], protocols)")
    dry_run_plan(validate_plan(fixed), ["protocol"])
    # yes/no answers still work as bool field values, in sums and comparisons
    flags_plan = '''def plan(texts):
    flags = get_label(texts, "Is it a game?")
    n = sum(flags)
    return [{"is_game": f, "many": n > 1, "same": f == True} for f in flags]'''
    dry_run_plan(validate_plan(flags_plan), ["is_game", "many", "same"])


def test_dry_run_uses_several_batch_sizes_and_the_worker():
    from falconer_assets.plan.planner import DRY_RUN_SIZES
    assert DRY_RUN_SIZES == (1, 3, 4)
    sneaky = '''def plan(texts):
    s = get_span(texts, "Who?")
    if len(texts) == 4:
        return [{"name": x} for x in s]
    return [{"x; DROP TABLE mined": True}] * len(texts)'''
    for in_process in (True, False):
        with pytest.raises(PlanRuntimeError, match=r"does not match .* \(dry run on 1 text\)$"):
            dry_run_plan(validate_plan(sneaky), ["name"], in_process=in_process)
    crash = '''def plan(texts):
    x = get_label(texts, "Is it?")
    t = ()
    for i in range(1000000):
        t = (t,)
    d = {t: 1}
    return [None] * len(texts)'''
    chat = ScriptedChat([f"```python\n{crash}\n```", VALID_REPLY])
    plan, attempts = plan_with_retries(chat, INSTRUCTION, FIELDS)
    first, trace = attempts[0].error.split("\n")
    assert first == "plan process died with SIGSEGV (dry run on 1 text)"
    assert "get_label(1 text, 'Is it?')" in trace  # the dry run's calls are fed back with the error
    assert plan.source == EXAMPLE_PLAN
