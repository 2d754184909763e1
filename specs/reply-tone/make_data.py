"""Regenerate data/all.jsonl for the reply-tone example (deterministic, no third-party packages).

    python specs/reply-tone/make_data.py

Preference triples for drafting support replies: `prompt` (the customer's message), `chosen` (a
reply in the house tone: owns the problem, gives the next step, short), `rejected` (a reply that
is curt, rambling, or asks for what the customer already gave), and `customer_id`. Customers
write several tickets each, so the spec splits by group on `customer_id`.

Hygiene a preference set needs, enforced here: chosen != rejected in every row; the rejected reply
is longer than the chosen one in about half the rows (no length shortcut to learn); no two
prompts, and no two whole rows, are near duplicates (Jaccard of digit-masked character 5-grams
above 0.5 and 0.7 are rejected).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 7
ROWS = 200
CUSTOMERS = 48

# scenario: (prompt templates, chosen templates)
SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    "late_refund": (
        ["my refund of {amount} for order {order} still has not arrived after {days} days",
         "where is the money for the {item} I sent back, it has been {days} days"],
        [("Sorry for the wait. The refund of {amount} left us on {date}; banks take up to five working days to show it. "
         "If it is not there by Friday, reply here and I will chase it."),
         ("I checked: your refund was approved on {date}. It should reach your card within five working days, "
         "and I have set a reminder to confirm it has landed.")]),
    "double_charge": (
        ["I was charged twice for my {plan} subscription this month",
         "why do I see two payments of {amount} on my statement"],
        [("You are right, the second charge of {amount} was our mistake. I have refunded it today; you will get "
         "a confirmation email within the hour."),
         ("Thanks for flagging this. One of the two payments was a duplicate, and I have reversed it. No action "
         "is needed on your side.")]),
    "password_reset": (
        ["the password reset email never arrives, I tried {days} times",
         "I cannot log in and the reset link does nothing"],
        [("Reset emails sometimes land in spam. I have sent a fresh link from our support address; it is "
         "valid for 30 minutes. If it does not show up, I can reset the password from here."),
         ("I have cleared the old reset requests and sent a new link. Open it on the same device you log in "
         "from; it expires in 30 minutes.")]),
    "app_crash": (
        ["the app crashes every time I open the {feature} screen on my {device}",
         "your latest update broke the {feature} page, it just closes"],
        [("Thanks for the details. This is a known issue in version {version} on the {device}; a fix ships this "
         "week. Until then, the {feature} screen works in the web app."),
         ("Sorry about that. I have logged the crash with our engineers under ticket {ticket}. Reinstalling will "
         "not help; the update due on {date} fixes it.")]),
    "missing_parcel": (
        ["order {order} says delivered but there is no parcel at my door",
         "tracking shows my {item} was delivered yesterday, I never got it"],
        [("I am sorry, that is frustrating. I have opened a trace with the courier for order {order}. If they "
         "cannot find it within two days, we will send a replacement at no cost."),
         ("Thanks for letting us know. Please check with neighbours first; meanwhile I have asked the courier "
         "for the delivery photo and will update you by {date}.")]),
    "wrong_item": (
        ["I ordered a {item} and received something completely different",
         "the box for order {order} had the wrong {item} inside"],
        [("Apologies for the mix-up. I have emailed you a prepaid return label, and the correct {item} ships "
         "today, so you do not need to wait for the return."),
         ("That should not have happened. Keep the wrong item for now; the right {item} is on its way and "
         "arrives by {date}.")]),
    "cancel_plan": (
        ["how do I cancel my {plan} plan before it renews on {date}",
         "please stop my subscription, I do not want it to renew"],
        ["Done: your {plan} plan will not renew. You keep access until {date}, and nothing more will be charged.",
         ("I have turned off auto-renewal for you. You can still use everything until {date}; after that the "
         "account switches to the free tier.")]),
    "invoice_vat": (
        ["my invoice is missing our VAT number {vat}",
         "can you reissue invoice {invoice} with the company name on it"],
        [("Of course. I have reissued invoice {invoice} with your company details and VAT number; it is attached "
         "to this reply."),
         ("Thanks for catching that. The corrected invoice is attached, and I have saved the details so future "
         "invoices include them.")]),
    "add_seats": (
        ["we need {seats} more seats on our team account",
         "how do I invite {seats} new colleagues to our workspace"],
        [("I have added {seats} seats to your workspace; the cost is prorated on the next invoice. Invite people "
         "from Settings, then Members."),
         ("You can add seats yourself under Settings, then Billing. I have also added {seats} now so you can send "
         "invites straight away.")]),
    "slow_sync": (
        ["syncing between my laptop and {device} takes hours now",
         "changes I make on the {device} do not show up on the web"],
        [("Thanks for reporting this. Our sync service was degraded since {date}; it is back to normal now. "
         "Pull to refresh on the {device} to catch up."),
         ("I checked your account and found a stuck sync job, which I have restarted. Your changes should appear "
         "within a few minutes.")]),
    "export_empty": (
        ["exporting my {feature} report to CSV gives an empty file",
         "the CSV export has headers but no rows"],
        [("Sorry about that. Exports over 10,000 rows time out at the moment; filter the {feature} report by "
         "month and export each part. A fix is planned for {date}."),
         ("I reproduced the empty export and passed it to engineering under ticket {ticket}. Meanwhile I have "
         "emailed you the export you asked for.")]),
    "address_change": (
        ["can I change the delivery address for order {order}",
         "I moved last week, please send order {order} to my new address"],
        [("Yes. Order {order} has not shipped yet, so I have updated the address; you will see it in the order "
         "confirmation shortly."),
         ("I have changed the address on order {order}. The courier gets the update tonight and the delivery "
         "date stays the same.")]),
}

CURT = ["We are looking into it.", "Please wait.", "Nothing we can do, sorry.", "See our help centre.",
        "Try again later.", "That is expected behaviour.", "Contact your bank.", "Please be patient."]
ASKS = ["Could you send us your order number and the email on the account so we can look into this?",
        "Can you tell us which device and app version you are using and when this started?",
        "Please describe the problem in more detail and attach screenshots so we can investigate."]
RAMBLE = [("Thank you so much for reaching out to us today, we truly value every single customer and we are "
          "always happy to hear from you. Our team works very hard and we appreciate your patience while we "
          "look at many requests. Please rest assured someone will be in touch."),
          ("Hello and thanks for contacting support! We know how important this is. There are many possible "
          "reasons this can happen and it depends on a lot of factors, so it is difficult to say right now "
          "what exactly is going on in your case. We will keep you posted."),
          ("Great question! Did you know you can find lots of answers in our community forum? Many customers "
          "have had similar experiences and shared tips there. We also publish a monthly newsletter with "
          "updates, which you can subscribe to from your profile page.")]

OPENERS = ["", "Hi, ", "Hello, ", "Hey, ", "Good morning, ", "Hi there, "]
CONTEXT = ["", "I have been a customer for {years} years.", "This is my second message about it.",
           "My manager keeps asking me about it.", "I already tried logging out and back in.",
           "Nobody answered my email from last week.", "I am travelling, so email is best.",
           "We rely on this for our whole team.", "I checked the help centre first.",
           "It worked fine until {day}.", "I am on the {plan} plan if that matters.",
           "A friend had the same problem last month.", "Your chat bot could not help."]
CLOSERS = ["", "Thanks.", "Please help.", "This is urgent.", "Any update?", "Thanks in advance.",
           "I need this sorted today."]
GREETINGS = ["", "Hi {name},", "Hello {name},", "Thanks for writing in, {name}.", "Hi {name}, thanks for the details."]
SIGNOFFS = ["", "Anything else, just reply here.", "I will keep this ticket open until it is fixed.",
            "Let me know if that works for you.", "{agent} from Support"]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Luis",
         "Maya", "Nils", "Olga", "Priya", "Rosa", "Sam", "Tariq", "Vera"]
AGENTS = ["Alex", "Jordan", "Robin", "Sasha", "Toni"]
SLOTS = {
    "plan": ["Starter", "Team", "Business", "Pro"],
    "item": ["lamp", "jacket", "kettle", "keyboard", "backpack", "desk chair", "blender"],
    "feature": ["reports", "calendar", "inbox", "projects", "analytics", "invoices"],
    "device": ["iPhone", "Android phone", "iPad", "tablet"],
    "day": ["last Monday", "the update", "yesterday", "the start of the month", "the weekend"],
    "date": ["Monday", "Tuesday", "Wednesday", "Thursday", "the 14th", "the 21st", "the end of the month"],
}


def fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def slot_values(rng: random.Random) -> dict[str, str]:
    v = {k: rng.choice(opts) for k, opts in SLOTS.items()}
    v.update(amount=f"${rng.randint(12, 420)}", order=f"#{rng.randint(10000, 99999)}", days=str(rng.randint(3, 21)),
             seats=str(rng.randint(2, 15)), version=f"4.{rng.randint(1, 9)}.{rng.randint(0, 9)}",
             ticket=f"T-{rng.randint(1000, 9999)}", vat=f"GB{rng.randint(100000000, 999999999)}",
             invoice=f"INV-{rng.randint(2000, 8999)}", years=str(rng.randint(2, 9)), name=rng.choice(NAMES),
             agent=rng.choice(AGENTS))
    return v


def shingles(text: str) -> set[str]:
    norm = re.sub(r"\d", "0", re.sub(r"\s+", " ", text.lower()))
    return {norm[i:i + 5] for i in range(max(1, len(norm) - 4))}


def too_close(sh: set[str], kept: list[set[str]], limit: float) -> bool:
    return any(len(sh & k) / len(sh | k) > limit for k in kept)


def rejected_reply(rng: random.Random, v: dict[str, str], chosen: str, want_longer: bool) -> str:
    for _ in range(50):
        if want_longer:
            text = rng.choice(RAMBLE)
        else:
            text = " ".join(x for x in (fill(rng.choice(GREETINGS[:3]), v), rng.choice(CURT + ASKS)) if x)
        if (len(text) > len(chosen)) == want_longer and text != chosen:
            return text
    return text


def join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def generate() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    customers = [f"C{n:03d}" for n in range(1, CUSTOMERS + 1)]
    weights = [rng.randint(2, 6) for _ in customers]
    prompts_kept: list[set[str]] = []
    rows_kept: list[set[str]] = []
    rows: list[dict[str, str]] = []
    names = sorted(SCENARIOS)
    tries = 0
    while len(rows) < ROWS:
        tries += 1
        assert tries < 50000, f"cannot find enough distinct rows ({len(rows)} found)"
        prompt_ts, chosen_ts = SCENARIOS[rng.choice(names)]
        v = slot_values(rng)
        body = fill(rng.choice(prompt_ts), v)
        body = body[0].upper() + body[1:] + ("?" if body.startswith(("how", "can", "where", "why")) else ".")
        opener = rng.choice(OPENERS).strip()
        if opener:
            body = body[0].lower() + body[1:]
        prompt = join(opener, body, fill(rng.choice(CONTEXT), v), rng.choice(CLOSERS))
        chosen = join(fill(rng.choice(GREETINGS), v), fill(rng.choice(chosen_ts), v), fill(rng.choice(SIGNOFFS), v))
        rejected = rejected_reply(rng, v, chosen, want_longer=len(rows) % 2 == 0)
        if rejected == chosen:
            continue
        sp, sr = shingles(prompt), shingles(join(prompt, chosen, rejected))
        if too_close(sp, prompts_kept, 0.5) or too_close(sr, rows_kept, 0.7):
            continue
        prompts_kept.append(sp)
        rows_kept.append(sr)
        customer = rng.choices(customers, weights)[0]
        rows.append({"customer_id": customer, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def main() -> None:
    rows = generate()
    longer = sum(len(r["rejected"]) > len(r["chosen"]) for r in rows)
    out = HERE / "data" / "all.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    groups = len({r["customer_id"] for r in rows})
    print(f"wrote {len(rows)} rows ({groups} customers; rejected longer in {longer}) to {out.relative_to(HERE)}")


if __name__ == "__main__":
    main()
