#!/usr/bin/env python3
"""(Re)generate the committed seed corpora in fuzz/corpus/<target>/.

Usage: python3 fuzz/seeds/make_corpus.py [TRANSCRIPTS_DIR]
(default: /work/shared/protocol/rails-transcripts)

* parse_command: every distinct client -> server text frame of the Rails 6.1 transcripts
  (`"dir":"out","kind":"text"` records, the `raw` payload), plus a few hand-made edge cases.
* cable_envelope: `identifier 0xFF message_json` for every server -> client data frame of
  the transcripts, plus identifiers/messages exercising escaping and nesting limits.
* sse_frame: `data 0xFF event 0xFF id 0xFF retry 0xFF comment` hand-made cases.

File names are the SHA-1 of the contents (libFuzzer's convention), so re-running is
idempotent. Existing seeds are kept.
"""
import glob
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), "corpus")
SEP = b"\xff"


def put(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/protocol/rails-transcripts"
    client, server = set(), set()
    for path in sorted(glob.glob(os.path.join(src, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("kind") != "text" or "raw" not in rec:
                    continue
                if rec.get("dir") == "out":
                    client.add(rec["raw"])
                elif rec.get("dir") == "in":
                    server.add(rec["raw"])

    # --- parse_command -------------------------------------------------------------
    for raw in client:
        put("parse_command", raw)
    ident = compact({"channel": "ChatChannel", "room": "1"})
    extra = [
        b"",
        b"\xff\xfe",
        b'{"command":"subscribe","identifier":"{\\"channel\\":\\"A\\"}\xc3"}',
        compact({"command": "subscrib\u0065", "identifier": ident}).replace("subscribe", "subscrib\\u0065"),
        compact({"command": "message", "identifier": ident,
                 "data": compact({"action": " \t", "x": [1, 2.5e300, -0, None, True]})}),
        compact({"command": "message", "identifier": ident, "data": "[" * 127 + "]" * 127}),
        compact({"command": "message", "identifier": ident,
                 "data": '{"a":' + "[" * 127 + "]" * 127 + "}"}),
        compact({"command": "subscribe", "identifier": '{"channel":"X","p":' + "[" * 130 + "]" * 130 + "}"}),
        compact({"command": "unsubscribe", "identifier": "\u2028<script>&\u0000"}),
        '{"command":"subscribe","identifier":"{}","identifier":' + json.dumps(ident) + ',"x":' + "[" * 2000 + "]" * 2000 + "}",
        '{"command":"message","identifier":"x","data":"{\\"action\\":\\"\\ud83d\\ude00\\"}"}',
        '{"command":"message","identifier":"x","data":"{\\"action\\":\\"\\ud800\\"}"}',
    ]
    for e in extra:
        put("parse_command", e)

    # --- cable_envelope ------------------------------------------------------------
    for raw in server:
        try:
            v = json.loads(raw)
        except ValueError:
            continue
        if isinstance(v, dict) and isinstance(v.get("identifier"), str):
            msg = v.get("message", v.get("type"))
            put("cable_envelope", v["identifier"].encode() + SEP + compact(msg).encode())
    for ident_s, msg in [
        ("", "null"),
        ('{"channel":"A","x":"</script><!--&\u2028\u2029"}', '"<b>&amp;</b>"'),
        ("\u0000\u0001\u001f\u007f\"\\/\t\n\r\b\f", ' {"a" : [1, -0, 1e-7, 18446744073709551616]} '),
        ("\U0001F600\u00e9", "\t\"\\ud83d\\ude00\"\n"),
        ("x", "[" * 127 + "]" * 127),
        ("x", "[" * 128 + "]" * 128),
        ("x", '{"a":1,"a":2}'),
    ]:
        put("cable_envelope", ident_s.encode() + SEP + msg.encode())

    # --- sse_frame -----------------------------------------------------------------
    def sse(data, event=None, id_=None, retry=None, comment=None):
        parts = [data, event, id_, retry, comment]
        while parts and parts[-1] is None:
            parts.pop()
        return SEP.join((p or "").encode() for p in parts)

    for args in [
        ("hello",),
        ("hello", "greeting"),
        ("a\nb\r\nc\rd", "e", "7", "5000", "keep-alive"),
        ("a\n", None, None, "0"),
        ("", "", "", "18446744073709551615", ""),
        ("\ufeffdata: evil\n\nid: 9\nevent: x\n", "  spaced", " 1", "12", "a\ndata: evil\r\n\r"),
        ('<turbo-stream action="append" target="messages"><template>hi</template></turbo-stream>',
         "message", "42"),
        ("\r\r\n\n\r", "x\ny", "1"),
        ("d", "ok", "a\u0000b"),
        ("d", "ok", "line\rbreak"),
        ("nul \u0000 and \u2028 sep", "ev:colon", "id:colon", "99999999999999999999999"),
    ]:
        put("sse_frame", sse(*args))


if __name__ == "__main__":
    main()
