#!/bin/bash
# Embed real text from ../shared/data with the default profile at short chunkings, as the
# sources of a 1M-chunk benchmark collection (docs/BENCHMARKS.md, "At 1,000,000 chunks"):
#
#     bash scripts/embed_1m_sources.sh [DIR]          # default DIR: data/s1m
#     python -m rag.bench grow --target 1000000 --from DIR/*.db --from ... --db URL
#
# One Milvus Lite db per step in DIR (a step's collection is its own corpus and chunking),
# so each process holds a small collection. A finished step leaves DIR/STEP.done and is
# skipped on the next run; a killed step resumes where it stopped (rag.eval and ingest both
# commit per document). 85-130 chunks/s on 2 cores with native bfloat16, about a third
# of that without: the whole list takes hours (docs/BENCHMARKS.md).
set -u
cd "$(dirname "$0")/.."
DIR=${1:-data/s1m}
DATA=../shared/data
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 RAG_NUM_THREADS=${RAG_NUM_THREADS:-2}
mkdir -p "$DIR"

step() {  # NAME HIGHEST_GOOD_EXIT_CODE COMMAND...
  local name=$1 good=$2 rc
  shift 2
  [ -e "$DIR/$name.done" ] && return
  echo "$(date -u +%FT%TZ) start $name" >> "$DIR/queue.log"
  nice -n 10 "$@" > "$DIR/$name.out" 2> "$DIR/$name.err"
  rc=$?
  if [ "$rc" -le "$good" ]; then
    touch "$DIR/$name.done"
    echo "$(date -u +%FT%TZ) done $name (exit $rc)" >> "$DIR/queue.log"
  else
    echo "$(date -u +%FT%TZ) FAILED $name (exit $rc)" >> "$DIR/queue.log"
  fi
}
beir() {  # NAME DATASET SPLIT CHUNK_SIZE OVERLAP
  step "$1" 0 "$PY" -m rag.eval "$DATA/$2" --split "$3" --db "$DIR/$1.db" --chunk-size "$4" \
    --chunk-overlap "$5" --mode dense --limit-queries 1 --threads "$RAG_NUM_THREADS" --json
}
folder() {  # NAME FOLDER CHUNK_SIZE OVERLAP; exit 1 = some files had no text: still done
  step "$1" 1 "$PY" -m ingest "$DATA/$2" --db "$DIR/$1.db" --collection "$1" \
    --chunk-size "$3" --chunk-overlap "$4"
}

beir cranfield_32 classic/cranfield test 32 0
beir scifact_32 beir/scifact train 32 0
beir nfcorpus_32 beir/nfcorpus_orig dev 32 0
beir dbpedia_32 beir_mini/dbpedia test 32 0
beir msmarco_32 beir_mini/msmarco test 32 0
beir cisi_32 classic/cisi test 32 0
folder docs_en_32 milvus_docs/web-content_v2.6.x_en 32 0
folder docs_en24_32 milvus_docs/en_v2.4.x_tutorial_zip/en 32 0
folder pdf_32 formats/pdf 32 0
folder html_32 formats/html 32 0
beir cmrc_32 multilingual/cmrc2018_zh trial 32 0
beir drcd_32 multilingual/drcd_zh_hant dev 32 0
for lang in ar de el es hi ru th tr vi zh; do
  beir "xquad_${lang}_32" "multilingual/xquad_r/$lang" test 32 0
done
folder docs_zh_32 milvus_docs/web-content_v2.6.x_localized/zh 32 0
folder docs_ja_32 milvus_docs/web-content_v2.6.x_localized/ja 32 0
beir scifact_48 beir/scifact train 48 16
beir nfcorpus_48 beir/nfcorpus_orig dev 48 16
folder docs_en_48 milvus_docs/web-content_v2.6.x_en 48 16
for set in "beir_mini/dbpedia test" "beir_mini/msmarco test" "classic/cisi test" \
    "classic/cranfield test" "multilingual/cmrc2018_zh trial" "multilingual/drcd_zh_hant dev"; do
  read -r dataset split <<< "$set"
  beir "$(basename "$dataset")_48" "$dataset" "$split" 48 16
done
for lang in ar de el es hi ru th tr vi zh; do  # en's sentences are already in data/eval.db
  beir "xquad_${lang}_sentences_32" "multilingual/xquad_r/$lang/sentences" test 32 0
done
folder docs_zh_48 milvus_docs/web-content_v2.6.x_localized/zh 48 16
folder docs_ja_48 milvus_docs/web-content_v2.6.x_localized/ja 48 16
folder docs_en24_48 milvus_docs/en_v2.4.x_tutorial_zip/en 48 16
beir scifact_24 beir/scifact train 24 0
beir nfcorpus_24 beir/nfcorpus_orig dev 24 0
folder docs_en_24 milvus_docs/web-content_v2.6.x_en 24 0
echo "$(date -u +%FT%TZ) queue end" >> "$DIR/queue.log"
