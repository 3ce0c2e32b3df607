"""Writes ticket-classifier.csv: 1,000 support tickets as the ticket classifier saw them in training (seeded).

Each ticket is a short customer message about billing, an account or a delivery, in the words such tickets use,
with the channel it came in on. Run from the repository root: python data/reference/make_ticket_reference.py
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

OPENINGS = ["Hi,", "Hello,", "Hi team,", "Good morning,", "", "", "Hey,", "Dear support,"]
CLOSINGS = ["Thanks.", "Thank you!", "Please help.", "Can you check?", "", "", "Regards.", "Any update?"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
TEMPLATES = {
    "billing": [
        "I was charged twice for my {month} invoice.",
        "My card was declined but the payment still shows as pending.",
        "Why is there a {amount} fee on my last bill?",
        "I need a refund for the order I cancelled in {month}.",
        "The discount code was not applied to my subscription.",
        "Can I change the card used for automatic payments?",
        "My invoice shows the wrong billing address.",
        "I paid {amount} but my balance did not change.",
    ],
    "account": [
        "I cannot log in to my account since the password reset.",
        "How do I change the email address on my profile?",
        "My account was locked after too many attempts.",
        "Please close my account and delete my data.",
        "I never received the verification code by text message.",
        "Two accounts were created with my email, can you merge them?",
        "I want to add a second user to my plan.",
    ],
    "delivery": [
        "My order from {month} has still not arrived.",
        "The tracking number you sent does not work.",
        "The package was delivered to the wrong address.",
        "One item was missing from my parcel.",
        "Can I change the delivery date for order {order}?",
        "The box arrived damaged and the product is broken.",
        "When will the item on back order ship?",
    ],
}
CHANNELS = {"email": 0.5, "chat": 0.35, "phone": 0.15}


def ticket(rng: random.Random) -> dict[str, str]:
    topic = rng.choices(list(TEMPLATES), weights=[0.45, 0.3, 0.25])[0]
    body = rng.choice(TEMPLATES[topic]).format(month=rng.choice(MONTHS), amount=f"${rng.randint(5, 250)}",
                                               order=f"#{rng.randint(10_000, 99_999)}")
    text = " ".join(part for part in (rng.choice(OPENINGS), body, rng.choice(CLOSINGS)) if part)
    return {"text": text, "channel": rng.choices(list(CHANNELS), weights=list(CHANNELS.values()))[0]}


OUTPUT = Path(__file__).with_name("ticket-classifier.csv")


def main(path: Path = OUTPUT, rows: int = 1_000) -> None:
    rng = random.Random(20261204)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["text", "channel"])
        writer.writeheader()
        writer.writerows(ticket(rng) for _ in range(rows))


if __name__ == "__main__":
    main()
