"""Regenerate data/ for the rlhf-helpfulness example (deterministic, no third-party packages).

    python specs/rlhf-helpfulness/make_data.py

"How do I ..." questions about a note-taking app, in three disjoint sets:
  data/preferences.jsonl   prompt, chosen, rejected, topic: the reward model's comparisons (stage 1)
  data/prompts.jsonl       prompt, topic: what the policy answers during RLOO (stage 2)
  data/eval_{val,test}.jsonl  prompt, reference, topic: held out from both stages, for the gates
A chosen answer gives the concrete steps; a rejected one is vague, answers a different question,
or rambles, and it is longer than the chosen one in about half the rows. No prompt is a near
duplicate of another in any file (Jaccard of digit-masked character 5-grams above 0.6 is
rejected), so nothing leaks from training into evaluation.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 11
SIZES = {"preferences": 200, "prompts": 120, "eval_val": 40, "eval_test": 40}
MAX_SIMILARITY = 0.6

# topic -> (task phrases, steps): the steps answer every phrase of the topic
TASKS: dict[str, tuple[list[str], str]] = {
    "share": (["share the notebook {nb} with {person}", "give {person} access to {nb}"],
              "Open {nb}, choose Share, type {person}'s email, pick Can edit or Can view, and press Send."),
    "export_pdf": (["export {nb} as a PDF", "save the pages of {nb} to a PDF file"],
                   "Open {nb}, choose File, then Export, pick PDF, and select the pages you want."),
    "tags": (["tag all notes about {topic} as {tag}", "add the tag {tag} to several notes at once"],
             "Select the notes with Shift-click, open the tag menu, type {tag}, and press Enter."),
    "restore": (["get back a note I deleted {when}", "restore a page removed from {nb} {when}"],
                "Open Trash from the sidebar, find the note, and choose Restore; Trash keeps notes for 30 days."),
    "offline": (["use {nb} without internet on my {device}", "keep {nb} available offline on the {device}"],
                "On the {device}, open {nb}, tap the three dots, and turn on Available offline."),
    "reminder": (["set a reminder on a note for {when2}", "get pinged about my {topic} note {when2}"],
                 "Open the note, tap the bell icon, choose {when2}, and save; reminders also arrive by email."),
    "template": (["turn my {topic} page into a template", "reuse the layout of my {topic} notes"],
                 "Open the page, choose More, then Save as template, and name it; new pages can start from it."),
    "dark_mode": (["switch the app to dark mode on {device}", "make the editor dark on the {device}"],
                  "Go to Settings, then Appearance, and pick Dark; on the {device} you can also follow the system."),
    "import": (["import my notes from {app}", "move everything from {app} into the app"],
               "Export from {app} as a zip, then choose Settings, Import, {app}, and upload the zip."),
    "search": (["find every note that mentions {topic}", "search inside attachments for {topic}"],
               "Press Ctrl+K or tap Search, type {topic}, and turn on Include attachments to search PDFs too."),
    "password": (["lock the notebook {nb} with a password", "protect {nb} so {person} cannot open it"],
                 "Open {nb}, choose Settings, then Lock notebook, and set a password; keep it safe, we cannot reset it."),
    "sync": (["make my {device} sync faster", "fix notes not syncing to my {device}"],
             "On the {device}, open Settings, then Sync, press Sync now, and check that background refresh is on."),
    "shortcut": (["add a shortcut to {nb} on my home screen", "pin {nb} so I can open it in one tap"],
                 "Open {nb}, tap the three dots, and choose Add to home screen (mobile) or Pin (desktop)."),
    "history": (["see who changed my {topic} page", "look at older versions of a page in {nb}"],
                "Open the page, choose More, then Page history, and pick a version to view or restore."),
    "print": (["print a single page from {nb}", "print my {topic} checklist"],
              "Open the page, press Ctrl+P or choose File, then Print, and untick Include comments if needed."),
    "email_in": (["send emails into the app as notes", "forward a {topic} email into {nb}"],
                 "Forward it to your personal address shown under Settings, then Email in; add @{nb} to the subject."),
}
SLOTS = {
    "nb": ["Recipes", "Project Atlas", "Travel 2024", "Meeting notes", "Reading list", "Garden plans", "Thesis"],
    "person": ["my sister", "a colleague", "my manager", "the new intern", "my co-author", "our designer"],
    "topic": ["the budget", "the launch", "invoices", "the wedding", "physics homework", "the garden",
              "marathon training", "hiring"],
    "tag": ["urgent", "q3", "ideas", "read-later", "client-x", "personal"],
    "when": ["yesterday", "last week", "this morning", "two days ago"],
    "when2": ["tomorrow at 9", "next Monday", "the first of every month", "Friday afternoon"],
    "device": ["iPhone", "Android phone", "iPad", "Windows laptop", "Mac", "Chromebook"],
    "app": ["Evernote", "OneNote", "Google Keep", "Notion", "Apple Notes"],
}
ASK = ["How do I {task}?", "How can I {task}?", "Is there a way to {task}?", "What is the quickest way to {task}?",
       "Can you explain how to {task}?", "I want to {task}. How?", "Please tell me how to {task}."]
CONTEXT = ["", "I am new to the app.", "I looked in the menus already.", "I use the free plan.",
           "I need it for a meeting in an hour.", "The help page did not make sense to me.",
           "I am on version 5 if that matters.", "My whole team will do the same after me."]
VAGUE = ["You can probably find that in the settings somewhere.", "That depends on your setup.",
         "Try looking around the app, it is in there.", "Maybe check the help centre."]
RAMBLE = [
    ("Great question! The app has many powerful features that help millions of people stay organised every "
     "day, and there are several ways to approach something like this depending on what you want to achieve "
     "and which device you happen to be using. Most users find that exploring the menus is the best way."),
    ("Thanks for asking. Everyone organises notes differently, so there is no single right answer here. Some "
     "people prefer notebooks, others prefer tags, and many use a mix of both. Take some time to experiment "
     "and you will find a workflow that suits you."),
    ("Our product team is always working on new features and improvements, and we release updates every few "
     "weeks. Keep an eye on the release notes and the community forum, where you will find lots of tips and "
     "tricks shared by other users."),
]


def fill(template: str, v: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: v[m.group(1)], template)


def shingles(text: str) -> set[str]:
    norm = re.sub(r"\d", "0", re.sub(r"\s+", " ", text.lower()))
    return {norm[i:i + 5] for i in range(max(1, len(norm) - 4))}


def question(rng: random.Random) -> tuple[str, str, str, dict[str, str]]:
    topic = rng.choice(sorted(TASKS))
    phrases, steps = TASKS[topic]
    v = {k: rng.choice(opts) for k, opts in SLOTS.items()}
    ask = fill(rng.choice(ASK), {"task": fill(rng.choice(phrases), v)})
    prompt = " ".join(x for x in (ask, rng.choice(CONTEXT)) if x)
    return topic, prompt, fill(steps, v), v


def rejected_answer(rng: random.Random, topic: str, chosen: str, v: dict[str, str], longer: bool) -> str:
    if longer:
        return rng.choice(RAMBLE)
    other = rng.choice([t for t in sorted(TASKS) if t != topic])  # answers a different question
    options = [rng.choice(VAGUE), fill(TASKS[other][1], v)]
    short = [o for o in options if len(o) < len(chosen)]
    return rng.choice(short or [min(options, key=len)])


def generate() -> dict[str, list[dict[str, str]]]:
    rng = random.Random(SEED)
    kept: list[set[str]] = []
    out: dict[str, list[dict[str, str]]] = {name: [] for name in SIZES}
    tries = 0
    for name, size in SIZES.items():
        while len(out[name]) < size:
            tries += 1
            assert tries < 100000, f"cannot find enough distinct prompts for {name}"
            topic, prompt, chosen, v = question(rng)
            sh = shingles(prompt)
            if any(len(sh & k) / len(sh | k) > MAX_SIMILARITY for k in kept):
                continue
            kept.append(sh)
            if name == "preferences":
                rejected = rejected_answer(rng, topic, chosen, v, longer=len(out[name]) % 2 == 0)
                row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "topic": topic}
            elif name == "prompts":
                row = {"prompt": prompt, "topic": topic}
            else:
                row = {"prompt": prompt, "reference": chosen, "topic": topic}
            out[name].append(row)
    return out


def main() -> None:
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    for name, rows in generate().items():
        path = data / f"{name}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} rows to {path.relative_to(HERE)}")


if __name__ == "__main__":
    main()
