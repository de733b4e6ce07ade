"""Compare a streaming .tflite with the Keras step model it comes from, utterance by utterance.

  python tools/exactness.py --model conformer-ctc-xs-w4 --manifest data/corpus/test.tsv
  python tools/exactness.py --model conformer-ctc-xs-w2 --tflite xs-w2.tflite --manifest M --limit 50

Without --tflite the streaming file is exported to a temporary file first (as
`tools/convert.py --model M --streaming` writes it).  Prints identical transcripts, the WER of
each side and the largest logit difference; --json writes everything, per utterance too.

--versus keras-ulp compares the Keras step model with itself on features one float32 ulp up
instead: how much a last-bit difference alone moves the transcripts, the yardstick for the
file's differences (run under TF_ENABLE_ONEDNN_OPTS=0 and =1 to compare TensorFlow's own two
CPU paths through the "keras" transcripts of the two --json files).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _setup  # noqa: F401,E402  (environment and sys.path)

from tfq_asr.errors import UserError, check_option_minimums, check_output_file, cli_main  # noqa: E402
from tfq_asr.eval.exactness import VERSUS  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bundled model name or model folder (streaming config)")
    ap.add_argument("--tflite", type=Path, help="its streaming .tflite (default: export one now)")
    ap.add_argument("--manifest", required=True, type=Path, help="TSV manifest (path, duration, voice, engine, text)")
    ap.add_argument("--limit", type=int, help="only the first N utterances")
    ap.add_argument("--lstm-steps", type=int, default=8, help="LSTM steps per call of the file (LSTM models)")
    ap.add_argument("--versus", choices=[v.replace("_", "-") for v in VERSUS], default="tflite",
                    help="what the Keras step model is compared with: the .tflite (default) or itself on "
                         "features one ulp up")
    ap.add_argument("--json", type=Path, help="write the full result here")
    args = ap.parse_args(argv)
    check_option_minimums(args, limit=1, lstm_steps=1)
    if args.json is not None:
        check_output_file("--json", args.json)
    from tfq_asr.convert.export import export_streaming
    from tfq_asr.eval.exactness import compare_streaming
    from tfq_asr.models import load_pretrained
    if args.tflite is not None and not args.tflite.is_file():  # before the model takes seconds to load
        raise UserError(f"--tflite {args.tflite}: no such file")
    model = load_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.tflite
        if path is None:
            path = Path(tmp) / f"{model.name}-stream.tflite"
            export_streaming(model, path, lstm_steps=args.lstm_steps)
        try:
            r = compare_streaming(model, path, args.manifest, limit=args.limit, lstm_steps=args.lstm_steps,
                                  versus=args.versus.replace("-", "_"))
        except ValueError as err:
            raise UserError(str(err)) from None
    side = r["versus"]
    print(f"{r['model']} ({r['policy']}), {r['utterances']} utterances of {args.manifest}: identical transcripts "
          f"{r['identical']}/{r['utterances']}; WER {r['wer_' + side]:.2f} ({VERSUS[side]}) vs {r['wer_keras']:.2f} "
          f"(Keras step model); max logit difference {r['max_logit_diff']:.3g} (median per utterance "
          f"{r['median_logit_diff']:.3g})")
    if args.json:
        from tfq_asr.convert.lowering import write_atomically
        write_atomically(args.json, (json.dumps(r, indent=2) + "\n").encode())


if __name__ == "__main__":
    cli_main(main)
