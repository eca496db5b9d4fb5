"""The import readers, fed in small chunks so every record crosses chunk boundaries."""

import json

import pytest

from tasks.records import FileUnreadable, Record, format_sniff, records_read

MAX = 200


def read(data: bytes, file_format: str, chunk: int = 7) -> list[Record]:
    return list(records_read([data[i : i + chunk] for i in range(0, len(data), chunk)], file_format, MAX))


def good(record: Record) -> bool:
    return record.error is None


ROW = {"username": "ana", "city": "Lyon", "state": "ARA", "message": "salut"}


@pytest.mark.parametrize("chunk", [1, 5, 64, 100_000])
def test_ndjson_lines_are_read_whatever_the_chunk_size(chunk):
    data = b"".join(json.dumps({**ROW, "message": f"m{i}"}).encode() + b"\n" for i in range(20))
    records = read(data, "ndjson", chunk)
    assert [r.position for r in records] == list(range(1, 21))
    assert records[19].data["message"] == "m19"


def test_ndjson_skips_a_bom_and_blank_lines_and_accepts_crlf_while_counting_lines():
    data = b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\r\n\r\n   \r\n" + json.dumps(ROW).encode()
    records = read(data, "ndjson")
    assert [(r.position, r.data) for r in records] == [(1, ROW), (4, ROW)]


def test_ndjson_reports_bad_encoding_bad_json_and_a_huge_line_and_reads_on():
    data = b"\n".join(
        [b'{"a": "\xff\xfe"}', b"{not json", b'{"x": "' + b"y" * 10_000 + b'"}', json.dumps(ROW).encode()]
    )
    records = read(data, "ndjson")
    assert [(r.position, r.error) for r in records[:3]] == [
        (1, "The line is not valid UTF-8."),
        (2, "The line is not valid JSON."),
        (3, f"The line is longer than {MAX} bytes."),
    ]
    assert records[3] == Record(4, ROW)


def test_a_huge_final_line_without_newline_is_one_rejected_record():
    records = read(json.dumps(ROW).encode() + b"\n" + b"z" * 5000, "ndjson")
    assert [r.position for r in records] == [1, 2]
    assert records[1].error == f"The line is longer than {MAX} bytes."


def test_csv_maps_columns_by_header_in_any_order_and_case_with_bom_and_crlf():
    data = b'\xef\xbb\xbfMessage,State,City,USERNAME\r\nhi,ARA,Lyon,ana\r\n\r\n"two\r\nlines",ARA,Lyon,bob\r\n'
    records = read(data, "csv")
    assert records == [
        Record(2, {"message": "hi", "state": "ARA", "city": "Lyon", "username": "ana"}),
        Record(4, {"message": "two\nlines", "state": "ARA", "city": "Lyon", "username": "bob"}),
    ]


def test_csv_without_a_needed_column_is_unreadable_from_its_header():
    with pytest.raises(FileUnreadable) as caught:
        read(b"username,city,message\nana,Lyon,hi\n", "csv")
    assert caught.value.position == 1
    assert "state" in caught.value.reason


def test_csv_reports_missing_columns_bad_encoding_and_a_huge_line_per_record():
    data = b"username,city,state,message\nana,Lyon\nb\xffb,Lyon,ARA,hi\n" + b"x" * 500 + b"\nbob,Lyon,ARA,ok\n"
    records = read(data, "csv")
    assert [(r.position, r.error) for r in records] == [
        (2, "Expected 4 columns, found 2."),
        (3, "The line is not valid UTF-8."),
        (4, f"The line is longer than {MAX} bytes."),
        (5, None),
    ]


def test_json_array_elements_are_read_one_by_one_across_chunks():
    data = (
        b"\xef\xbb\xbf [\r\n"
        + b",\n".join(json.dumps({**ROW, "message": f"m{i}"}).encode() for i in range(10))
        + b"]\n"
    )
    records = read(data, "json", chunk=3)
    assert [r.position for r in records] == list(range(10))
    assert all(good(r) for r in records)


def test_an_empty_json_array_has_no_records():
    assert read(b"[ ]", "json") == []


@pytest.mark.parametrize(
    ("data", "position", "words"),
    [
        (b'{"username": "a"}', 0, "must hold one array"),
        (b'[{"a": 1}, {"b": 2', 1, "ends too early"),
        (b'[{"a": 1} {"b": 2}]', 1, "Expected , or ]"),
        (b'[{"a": 1}, {"b": "\xff"}]', 1, "not valid UTF-8"),
        (b'[{"a": 1}, {"b": "' + b"x" * 1000 + b'"}]', 1, "longer than"),
        (b'[{"a": 1}] [', 1, "after the JSON array"),
    ],
)
def test_a_broken_json_array_stops_with_the_element_index(data, position, words):
    with pytest.raises(FileUnreadable) as caught:
        read(data, "json")
    assert caught.value.position == position
    assert words in caught.value.reason


def test_a_utf16_file_is_refused_with_a_clear_reason():
    with pytest.raises(FileUnreadable, match="UTF-16"):
        read("username,city,state,message\n".encode("utf-16"), "csv")


@pytest.mark.parametrize(
    ("head", "expected"), [(b"\xef\xbb\xbf  [", "json"), (b'\n{"a"', "ndjson"), (b"username,city", "csv")]
)
def test_the_format_is_guessed_from_the_first_bytes(head, expected):
    assert format_sniff(head) == expected


def test_csv_reports_bad_quoting_and_a_nul_byte_and_reads_on():
    data = b'username,city,state,message\nana,Lyon,ARA,"bad"quote\nbob,Ly\x00on,ARA,hi\ncleo,Nice,PAC,ok\n'
    records = read(data, "csv")
    assert [r.position for r in records] == [2, 3, 4]
    assert records[0].error and records[0].error.startswith("The CSV record is malformed")
    assert records[2] == Record(4, {"username": "cleo", "city": "Nice", "state": "PAC", "message": "ok"})


def test_an_empty_csv_file_has_no_header_and_is_unreadable():
    with pytest.raises(FileUnreadable, match="no header"):
        read(b"\r\n\r\n", "csv")
