"""Regenerate data/{train,val,test}.jsonl for the ticket-triage example (deterministic).

    python specs/ticket-triage/make_data.py

Short synthetic support tickets with fields `text`, `label` (billing, bug, account, shipping) and
`channel` (email, chat, web). Each ticket is assembled from a label-specific problem, a detail,
and a channel-specific frame; a candidate that is too close to one already kept (Jaccard of
digit-masked character 5-grams above 0.5) is rejected, so the splits hold no near duplicates
and nothing leaks between them. Classes and channels are balanced and stratified across splits.
No third-party packages; the output is byte-identical on every run. `corpus(n)` draws unlabelled
tickets from the same generator on another random stream: models/make_tiny_bert.py pre-trains on them.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611
CORPUS_SEED = 7
SPLITS = ("train", "val", "test")
LABELS = ("billing", "bug", "account", "shipping")
# rows per (label, channel) cell in train/val/test: 168/40/40 rows, 16 email tickets per label in test
CELLS = {"email": (16, 4, 4), "chat": (14, 3, 3), "web": (12, 3, 3)}
MAX_SIMILARITY = 0.5

PROBLEMS = {
    "billing": [
        "I was charged {amount} twice for the {plan} plan this month",
        "my invoice for {month} shows {amount} but the plan costs less",
        "the refund of {amount} you promised on {date} never arrived",
        "you billed my old card after I updated the payment method",
        "I cancelled the {plan} plan but the renewal still went through",
        "the annual discount was not applied to my {month} invoice",
        "there is a tax line on the invoice that does not apply to us",
        "please send a corrected invoice with our VAT number on it",
        "the trial converted to a paid {plan} subscription without warning",
        "I see a pending charge of {amount} that I do not recognise",
        "our purchase order number is missing from the latest bill",
        "the currency on my receipt switched from euros to dollars",
        "we were moved to a more expensive tier without asking",
        "can I get a prorated credit for downgrading mid cycle",
    ],
    "bug": [
        "the app crashes as soon as I open the {feature} screen",
        "exporting a report to CSV gives an empty file",
        "the {feature} page just spins forever in {browser}",
        "search returns nothing even for items I know exist",
        "notifications arrive twice since the update on {date}",
        "dark mode makes the {feature} buttons invisible",
        "the mobile app logs me out every few minutes on my {device}",
        "uploading a photo fails with error code {code}",
        "dates in the calendar view are shifted by one day",
        "the save button does nothing on the {feature} form",
        "charts on the dashboard show yesterday's numbers only",
        "the sync between desktop and {device} stopped working",
        "pasting text into the editor duplicates every line",
        "the {feature} filter resets whenever I change tabs",
    ],
    "account": [
        "I cannot reset my password because the email never comes",
        "please change the owner of our workspace to my colleague",
        "two factor codes from my {device} are always rejected",
        "how do I merge my personal and work accounts",
        "my account got locked after a few wrong login attempts",
        "I want to delete my account and all stored data",
        "the invite link for a new teammate has expired",
        "I need to change the email address on my profile",
        "single sign on redirects me back to the login page",
        "a former employee still has admin rights in our team",
        "how can I download a copy of my personal data",
        "my username shows someone else's name after the migration",
        "I lost access to the phone number used for recovery",
        "please add three more seats to our team account",
    ],
    "shipping": [
        "order {order} was marked delivered but nothing arrived",
        "the tracking number for order {order} does not work",
        "my package has been stuck in customs since {date}",
        "the box arrived damaged and the {item} is broken",
        "I received the wrong size of {item} in my order",
        "can I change the delivery address for order {order}",
        "the courier left the parcel with a neighbour I do not know",
        "express shipping took nine days instead of two",
        "half of order {order} is missing from the parcel",
        "I was asked to pay an import fee on delivery",
        "the estimated delivery date keeps moving back",
        "please combine my two open orders into one shipment",
        "the return label you sent is for the wrong country",
        "the {item} I returned on {date} is still not logged",
    ],
}

DETAILS = [
    "This is the second time I am writing about it.",
    "It started right after last week's update.",
    "My manager needs this sorted before Friday.",
    "I already tried logging out and in again.",
    "Screenshots are available if you need them.",
    "We are on the {plan} plan with about {seats} users.",
    "Nothing in the help centre covered this case.",
    "A quick reply would be really appreciated.",
    "Our whole team is affected, not only me.",
    "I am happy to jump on a call to explain.",
    "The reference on my side is {code}.",
    "It worked fine until the beginning of {month}.",
    "",
]

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luis",
         "Maya", "Nils", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Vera", "Wen", "Yusuf"]
SLOTS = {
    "plan": ["Starter", "Team", "Business", "Pro", "Enterprise"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September"],
    "feature": ["reports", "settings", "billing history", "projects", "inbox", "calendar", "analytics"],
    "browser": ["Firefox", "Safari", "Chrome", "Edge"],
    "device": ["iPhone", "Android phone", "iPad", "laptop", "tablet"],
    "item": ["jacket", "lamp", "keyboard", "backpack", "kettle", "monitor stand", "pair of shoes"],
}


def fill(template: str, rng: random.Random) -> str:
    def one(match: re.Match[str]) -> str:
        slot = match.group(1)
        if slot == "amount":
            return f"${rng.randint(9, 480)}.{rng.choice(['00', '50', '99'])}"
        if slot == "date":
            return f"{rng.choice(SLOTS['month'])} {rng.randint(1, 28)}"
        if slot == "order":
            return f"#{rng.randint(10000, 99999)}"
        if slot == "code":
            return f"E{rng.randint(100, 999)}"
        if slot == "seats":
            return str(rng.randint(3, 60))
        return rng.choice(SLOTS[slot])

    return re.sub(r"\{(\w+)\}", one, template)


SUBJECTS = {
    "billing": ["Charge question", "Invoice problem", "Refund request", "Payment issue", "Billing"],
    "bug": ["Something is broken", "Error in the app", "Bug report", "Feature not working", "Crash"],
    "account": ["Login help", "Account access", "Account change", "Team permissions", "Profile"],
    "shipping": ["Delivery problem", "Where is my order", "Parcel issue", "Shipping", "Return"],
}


def sentence(text: str) -> str:
    mark = "?" if text.split(" ")[0] in ("how", "can") else "."
    return text[0].upper() + text[1:] + mark


def frame(label: str, channel: str, problem: str, detail: str, rng: random.Random) -> str:
    name = rng.choice(NAMES)
    if channel == "email":
        greet = rng.choice(["Hi team,", "Hello,", "Dear support,", "Good morning,"])
        sign = rng.choice([f"Thanks, {name}", f"Best regards, {name}", f"Cheers, {name}", f"Kind regards, {name}"])
        return " ".join(x for x in (greet, sentence(problem), detail, sign) if x)
    if channel == "chat":
        opener = rng.choice(["hey", "hi there", "hello", "quick question", "hi"])
        tail = f". {detail[0].lower()}{detail[1:-1]}" if detail else ""
        return f"{opener}, {problem}{tail}"
    subject = rng.choice(SUBJECTS[label])
    return " ".join(x for x in (f"[Web form] Subject: {subject}. Message:", sentence(problem), detail) if x)


def shingles(text: str) -> set[str]:
    norm = re.sub(r"\d", "0", re.sub(r"\s+", " ", text.lower()))
    return {norm[i:i + 5] for i in range(max(1, len(norm) - 4))}


def generate() -> dict[str, list[dict[str, str]]]:
    rng = random.Random(SEED)
    kept: list[set[str]] = []
    out: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for label in LABELS:
        for channel, quota in CELLS.items():
            rows: list[dict[str, str]] = []
            tries = 0
            while len(rows) < sum(quota):
                tries += 1
                assert tries < 20000, f"cannot find distinct tickets for {label}/{channel}"
                problem = fill(rng.choice(PROBLEMS[label]), rng)
                detail = fill(rng.choice(DETAILS), rng)
                text = frame(label, channel, problem, detail, rng)
                sh = shingles(text)
                if any(len(sh & k) / len(sh | k) > MAX_SIMILARITY for k in kept):
                    continue
                kept.append(sh)
                rows.append({"text": text, "label": label, "channel": channel})
            start = 0
            for name, n in zip(SPLITS, quota):  # stratified: every split gets its share of the cell
                out[name].extend(rows[start:start + n])
                start += n
    for rows in out.values():
        rng.shuffle(rows)
    return out


def corpus(n: int, seed: int = CORPUS_SEED) -> list[str]:
    """`n` unlabelled tickets from the same templates, words and frames as the splits but a different
    random stream: the pre-training text for models/make_tiny_bert.py (a stand-in for the in-domain
    text a real base has read). Labels are not returned. No candidate is a copy or a near copy
    (the splits' own similarity bound) of any val or test ticket, nor a copy of a training one, so
    the base has never read the held-out text it is evaluated on."""
    splits = generate()
    held_out = [shingles(r["text"]) for name in ("val", "test") for r in splits[name]]
    seen = {r["text"] for rows in splits.values() for r in rows}
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        label = rng.choice(LABELS)
        channel = rng.choice(tuple(CELLS))
        problem = fill(rng.choice(PROBLEMS[label]), rng)
        text = frame(label, channel, problem, fill(rng.choice(DETAILS), rng), rng)
        sh = shingles(text)
        if text in seen or any(len(sh & k) / len(sh | k) > MAX_SIMILARITY for k in held_out):
            continue
        out.append(text)
    return out


def main() -> None:
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    for name, rows in generate().items():
        with (data / f"{name}.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"wrote {len(rows)} rows to {(data / f'{name}.jsonl').relative_to(HERE)}")


if __name__ == "__main__":
    main()
