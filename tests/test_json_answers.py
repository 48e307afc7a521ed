"""JSON answers (filesvc/jsonbody.py): the same values whatever the encoder, never a failure."""

from __future__ import annotations

import json

from filesvc.jsonbody import json_answer


def body_of(data: object) -> object:
    response = json_answer(data, status=201, headers={"Cache-Control": "no-store"})
    assert response.status == 201 and response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert isinstance(response.body, bytes)
    return json.loads(response.body)


def test_values_round_trip_including_text_outside_ascii() -> None:
    data = {"name": "résumé 履歴書 📄.pdf", "size": 2**62, "none": None, "list": [True, 1.5]}
    assert body_of(data) == data


def test_what_orjson_refuses_is_encoded_by_the_standard_library() -> None:
    data = {"message": "bad \ud800 half", "big": 2**70}
    assert body_of(data) == data


def test_reason_phrase_is_kept() -> None:
    assert json_answer({}, status=460, reason="Checksum Mismatch").reason == "Checksum Mismatch"
