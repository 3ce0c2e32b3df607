"""The shipped NLP rule's drift section on its shipped reference: tickets like the training ones do not drift,
tickets about something the model never saw do, through the text's descriptors."""
from __future__ import annotations

import random

import pytest

from controlplane.adapters.artifacts import LocalArtifacts
from controlplane.adapters.drift_checker import EvidentlyDriftChecker
from tests.support import ROOT


@pytest.fixture(scope="module")
def nlp(policy, tmp_path_factory):
    rule = policy.rule_for("ticket-classifier")
    checker = EvidentlyDriftChecker(LocalArtifacts(tmp_path_factory.mktemp("artifacts")), "http://cp.test", ROOT)
    return rule, checker


def same_source(seed: int, rows: int = 200) -> list[dict[str, str]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("tickets", ROOT / "data" / "reference" / "make_ticket_reference.py")
    tickets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tickets)
    rng = random.Random(seed)
    return [tickets.ticket(rng) for _ in range(rows)]


NEW_PRODUCT = ["The mobile app crashes when I upload a photo from the gallery.",
               "Video playback stutters on my smart TV after the firmware update.",
               "The camera sync feature drains my phone battery overnight.",
               "Bluetooth pairing with the headset fails on Android 14."]


def test_the_nlp_rule_checks_text_and_channel_and_is_shadowed(nlp):
    rule, _ = nlp
    assert rule.profile.value == "nlp" and rule.mode.value == "shadow"
    assert rule.drift.columns == {"text": "text", "channel": "categorical"}


def test_tickets_from_the_same_source_do_not_drift(nlp):
    rule, checker = nlp
    alarms = [checker.check(same_source(seed), rule.drift).dataset_drift for seed in range(1, 11)]
    assert sum(alarms) <= 2  # alpha 0.05 per window, Holm across the descriptors and the channel


def test_tickets_about_a_product_the_model_never_saw_drift_through_their_words(nlp):
    rule, checker = nlp
    rng = random.Random(7)
    window = [{"text": rng.choice(NEW_PRODUCT), "channel": rng.choice(["email", "chat"])} for _ in range(200)]
    result = checker.check(window, rule.drift)
    assert result.dataset_drift and "text:oov_share" in result.drifted, result.reason
