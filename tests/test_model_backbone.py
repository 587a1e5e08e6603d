"""What counts as "other weights" for a tuned model (srpl_cli.model_backbone)."""

from __future__ import annotations

from srpl_cli.model_backbone import BackboneId, mismatch

DV = "dvector:resemblyzer-0.1.4:0123456789ab"
MODEL = "model 'default'"


def test_parse_every_identifier_form():
    assert BackboneId.parse(f"{DV}:fe2:w20") == BackboneId("dvector", "0123456789ab", 2, "20", False)
    assert BackboneId.parse("eres2netv2:abcdef:fe1:w20:bf16") == BackboneId(
        "eres2netv2", "abcdef", 1, "20", True
    )
    # written before front-end versions existed: front end 1, no window
    assert BackboneId.parse(DV) == BackboneId("dvector", "0123456789ab", 1, None, False)


def test_the_cpu_path_and_the_weights_label_are_not_a_mismatch():
    assert mismatch("eres2netv2:abcdef:fe1:w20:bf16", "eres2netv2:abcdef:fe1:w20", MODEL) is None
    assert mismatch("eres2netv2:abcdef:fe1:w20", "eres2netv2:abcdef:fe1:w20:bf16", MODEL) is None
    # the packaged weights file and the same file passed with --backbone-path
    assert mismatch(f"{DV}:fe2:w20", "dvector:local:0123456789ab:fe2:w20", MODEL) is None
    assert mismatch(None, f"{DV}:fe2:w20", MODEL) is None  # the model does not say: nothing to check


def test_an_older_front_end_says_re_tune_and_not_weights():
    for old in (f"{DV}:fe1:w20", DV):
        why = mismatch(old, f"{DV}:fe2:w20", MODEL)
        assert why is not None and why.hint is None
        assert why.reason == (
            "model 'default' was tuned under an older dvector front end (fe1; this srpl embeds with fe2): "
            "re-tune it (srpl tune)"
        )
        assert "weights" not in why.reason


def test_other_weights_are_named():
    why = mismatch(f"{DV}:fe2:w20", "dvector:local:ffffffffffff:fe2:w20", MODEL)
    assert why is not None and "weights found (dvector:local:ffffffffffff:fe2:w20) differ" in why.reason
    assert "--backbone-path" in why.hint
