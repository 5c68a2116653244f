#!/usr/bin/env bash
# The two-concept research of experiments/concepts/README.md: the sentiment candidates fitted and compared on
# the development sets, then (once the rule has chosen; CHOSEN below) the four methods on the test prompts and
# on the hostile prompts. Resumable: a step whose output exists is skipped. One thread (it runs beside others).
set -euo pipefail
cd "$(dirname "$0")/../.."
source .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
R=${RUNS:-/tmp/concepts}
OUT=experiments/concepts/results
mkdir -p "$R" "$OUT"
OFF="callbacks.evaluate=null callbacks.export_merged=null callbacks.export_gguf=null trainer.enable_progress_bar=false"
CONTROL='module.control=${lineas_data:neutral/control.txt}'

fit() {  # fit NAME OVERRIDES...: python -m lineas.train into $R/NAME, its wall time in $R/NAME.wall
  local name=$1; shift
  [ -f "$R/$name/maps/lineas.json" ] && return
  rm -rf "${R:?}/$name"
  local start=$SECONDS
  python -m lineas.train output_dir="$R/$name" $OFF "$@"
  echo $((SECONDS - start)) > "$R/$name.wall"
}

compare() {  # compare NAME PROMPTS TEXTS SCORER MAPS LABELS BATCH: python -m lineas.compare, its table to $OUT/NAME.{json,md}
  local name=$1 prompts=$2 texts=$3 scorer=$4 maps=$5 labels=$6 batch=$7
  [ -f "$OUT/$name.json" ] && return
  python -m lineas.compare "maps=$maps" "labels=$labels" "strengths=[0.5,1]" output_dir="$R/$name" overwrite=true \
      "scorer=$scorer" "prompts=\${lineas_data:$prompts}" "perplexity_texts=\${lineas_data:$texts}" \
      sampling.batch_size="$batch" progress=false
  cp "$R/$name/compare.json" "$OUT/$name.json"; cp "$R/$name/compare.md" "$OUT/$name.md"
}

# the sentiment candidates, judged on the development sets
fit sentiment recipe=sentiment_smollm2 module.control=null  # the recipe as it was: no control term
fit sentiment-control1 recipe=sentiment_smollm2 "$CONTROL" module.control_weight=1
fit sentiment-control3 recipe=sentiment_smollm2 "$CONTROL" module.control_weight=3
compare sentiment_dev sentiment/prompts_dev.txt neutral/wiki_dev.txt lineas.metrics.Sentiment \
    "[$R/sentiment/maps,$R/sentiment-control1/maps,$R/sentiment-control3/maps]" "[default,control1,control3]" 60

# the test sets, once the rule (README.md) has chosen on results/sentiment_dev.md: CHOSEN=RUN (e.g. sentiment)
if [ -z "${CHOSEN:-}" ]; then
  echo "development comparison: $OUT/sentiment_dev.md; choose by the README's rule, then: CHOSEN=RUN $0"
  exit 0
fi
fit toxicity  # the default recipe
if [ ! -f "$R/composed-$CHOSEN/lineas.json" ]; then
  python -m lineas.compose "maps=[$R/toxicity/maps,$R/$CHOSEN/maps]" "strengths=[1,1]" output_dir="$R/composed-$CHOSEN"
fi
# the joint fit with the chosen settings (its control term, if any)
W=$(python -c "import json; c = json.load(open('$R/$CHOSEN/maps/lineas.json'))['control']; print(c['weight'] if c else '')")
if [ -n "$W" ]; then JOINT=("$CONTROL" "module.control_weight=$W"); else JOINT=(); fi
fit "joint-$CHOSEN" recipe=joint_smollm2 module.control=null "${JOINT[@]}"
METHODS="[$R/toxicity/maps,$R/$CHOSEN/maps,$R/composed-$CHOSEN,$R/joint-$CHOSEN/maps]"
BOTH="[lineas.metrics.Toxicity,lineas.metrics.Sentiment]"
compare concepts_test sentiment/prompts.txt neutral/wiki.txt "$BOTH" "$METHODS" "[toxicity,sentiment,composed,joint]" 98
compare concepts_hostile joint/prompts.txt neutral/wiki.txt "$BOTH" "$METHODS" "[toxicity,sentiment,composed,joint]" 60
