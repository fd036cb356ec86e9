"""Write the golden-file fixtures of tests/test_normalize_golden.py (texts written for this test).

    python tests/data/normalize/make_golden.py             # inputs only
    python tests/data/normalize/make_golden.py --expected  # and the expected outputs, via the CLI

Review the diff of the expected files before committing them.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent

CLEAN = "吾輩の家の近くには、小さな川が流れている。夏になると、子どもたちが網を持って魚を捕りに来る。川の水はとても冷たく、足を入れるとすぐにしびれてしまうほどだ。"
CLEAN2 = "図書館で借りた本を返しに行く途中、久しぶりに高校時代の友人に会った。彼は今、地元の役所で働いているそうだ。近いうちに食事でもしようと約束して別れた。"

RECORDS = [
    # clean, with extra fields that must pass through unchanged
    {"id": 1, "text": CLEAN, "url": "https://example.jp/a", "meta": {"lang": "ja", "score": 0.9}},
    # noisy: full-width ASCII, half-width katakana, wave dashes, zero-width space, BOM, CRLF,
    # U+3000 indentation, runs of blank lines, trailing spaces, a control character
    {"id": "n2", "text": "\ufeff　ＡＢＣ社の新製品は１０～２０台限定で、ｶﾀﾛｸﾞに載っています。\r\n\r\n\r\n\r\n"
                         "　値段は三万円〜五万円ほどで、発売日は来月の十日だそうです。\u200b店頭での予約も受け付けていて、  \r\n"
                         "　問い合わせが多いのでお早めにとのことでした……。\x07本当に楽しみですね！？"},
    # dropped by character-level filters
    {"id": 3, "text": "短すぎる文。"},
    {"id": 4, "text": "This record is written in English and should be dropped because it is not Japanese text at all."},
    # UTF-8 read as cp932 (made from our own sentence)
    {"id": 5, "text": "これは文字化けした文章です。あとで元に戻すことはできません。読めない文字が続いています。".encode("utf-8").decode("cp932", errors="replace")},
    {"id": 6, "text": "東京 大阪 名古屋 札幌 福岡 仙台 広島 神戸 京都 横浜 温泉 旅館 ホテル 民宿 格安 予約 観光 グルメ 夜景 紅葉 花火 祭り 世界遺産"},
    {"id": 7, "text": "今すぐ登録しよう！今すぐ登録しよう！今すぐ登録しよう！今すぐ登録しよう！今すぐ登録しよう！今すぐ登録しよう！"},
    # a bad JSON line and a record without the text field come here (written raw below)
    {"id": 8, "text": CLEAN2},
    # exact duplicate of record 1 once normalized (full-width comma and indentation differ)
    {"id": 9, "text": "　" + CLEAN.replace("、", "、")},
    # near duplicate of record 8: one sentence changed at the end
    {"id": 10, "text": CLEAN2.replace("別れた。", "別れたのだった。")},
    # a list of nouns in hiragana passes the character filters: Sudachi's noun ratio drops it
    {"id": 11, "text": "すきな花のいちらん：ひまわり、たんぽぽ、すみれ、あじさい、さくら、もみじ、つばき、ききょう、"
                       "なでしこ、りんどう、あさがお、かすみそう、れんげ、こすもす、すいせん、ゆり、ばら、きく"},
]
BAD_LINES = {7: '{"id": 99, "text": "閉じていない文字列}\n', 8: '{"id": 100, "body": "本文のキーが違う"}\n'}

SJIS_TEXT = ("　むかしむかし、ある山のふもとに、おじいさんとおばあさんが住んでいました。\r\n"
             "　おじいさんは毎日山へしば刈りに、おばあさんは川へ洗濯に行きました。\r\n"
             "　ある日、川上から大きな桃が、どんぶらこ、どんぶらこと流れてきました。ﾓﾓ～！\r\n")


def write_inputs() -> None:
    with open(HERE / "golden_in.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for i, record in enumerate(RECORDS, start=1):
            if i in BAD_LINES:
                f.write(BAD_LINES[i])
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    (HERE / "golden_sjis.txt").write_bytes(SJIS_TEXT.encode("cp932"))


def write_expected() -> None:
    import os

    from click.testing import CliRunner

    from jpcorpus.normalize.cli import normalize

    os.chdir(HERE)
    runs = {
        "golden_out": ["golden_in.jsonl", "--skip-bad"],
        "golden_sjis_out": ["golden_sjis.txt", "--encoding", "cp932"],
    }
    for stem, args in runs.items():
        result = CliRunner().invoke(normalize, args + ["-o", f"{stem}.jsonl", "--rejects", f"{stem}.rejects.jsonl"])
        print(result.output)
        assert result.exit_code == 0, result.output


if __name__ == "__main__":
    write_inputs()
    if "--expected" in sys.argv:
        write_expected()
