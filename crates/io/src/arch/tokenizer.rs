//! Tokenizer files -> the `tokenizer.*` GGUF keys, as `convert_hf_to_gguf.py`
//! writes them.
//!
//! [`tokenizer_metadata`] takes the files of a Hugging Face model directory
//! ([`TokenizerFiles`]) and picks the converter's path for the architecture:
//!
//! - **SentencePiece** (`tokenizer.model` present; `_set_vocab_sentencepiece`):
//!   `tokenizer.ggml.model = "llama"`, pre `default`, the pieces, their scores
//!   and types (normal / unknown / control / unused / byte; user-defined for
//!   `added_tokens.json` and non-special `added_tokens_decoder` entries),
//!   padded with `[PADn]` to the config's `vocab_size`. The `.model` file is
//!   read directly (a protocol-buffer reader for the three fields used).
//! - **Llama-2 style `tokenizer.json`** (Llama/Mistral only, no
//!   `tokenizer.model`, a BPE model with byte fallback and a `Sequence`
//!   decoder; `_set_vocab_llama_hf` / gguf-py's `LlamaHfVocab`): model
//!   `llama`, pre `default`, every score -1000, types byte / control (the
//!   special tokens `transformers` names: `bos_token`... and
//!   `additional_special_tokens`) / normal, added tokens past the base
//!   vocabulary appended (control if named special, else user-defined).
//! - **Byte-level BPE** (everything else, e.g. Llama 3 and Qwen2;
//!   `_set_vocab_gpt2`): model `gpt2`, `tokenizer.ggml.pre`, tokens padded with
//!   `[PADn]` to `vocab_size`, types normal / control / user-defined / unused,
//!   and the merges.
//! - **No tokenizer**: `tokenizer.ggml.model = "none"` and no vocabulary,
//!   which llama.cpp accepts (the converter itself cannot do this).
//!
//! Then, as gguf-py's `SpecialVocab`: special token ids (from
//! `tokenizer_config.json` names looked up in `tokenizer.json`'s
//! `added_tokens`, then `config.json`'s `*_token_id`), `add_bos` / `add_eos` /
//! `add_sep` (from the post-processor, then `tokenizer_config.json`), the chat
//! template(s) and the normalizer flags; for Llama/Mistral also
//! `tokenizer.ggml.add_space_prefix` from `add_prefix_space`, and the
//! converter's CodeLlama (vocabulary 32016) and Granite (49152) quirks.
//!
//! Where the converter runs the tokenizer and this module cannot:
//!
//! - **`tokenizer.ggml.pre`** (byte-level BPE only). The converter encodes a
//!   fixed text and looks the hash of the token ids up in a table. Here the
//!   caller may name it ([`TokenizerOptions::pre`]); otherwise the
//!   pre-tokenizer of `tokenizer.json` decides: the Llama-3 split regex gives
//!   `llama-bpe`, the Qwen2 regex `qwen2`, a bare GPT-2 `ByteLevel`
//!   pre-tokenizer `gpt-2`; anything else is an error asking for the name.
//!   Different models sharing a regex but differing elsewhere (normalizer,
//!   vocabulary quirks) get the same name from the heuristic.
//! - **Added tokens that are not `normalized`** are round-tripped through the
//!   tokenizer by the converter (`decode(encode(t))`); here they are taken
//!   as written, which is what that round trip gives for ordinary added
//!   tokens.
//!
//! Deliberate differences: a Unigram `tokenizer.json` without a
//! `tokenizer.model` (which the converter cannot convert: it takes the BPE
//! path and fails on the unknown pre-tokenizer hash) is written as the
//! SentencePiece path would write the equivalent `.model` (control = added
//! tokens marked special); and a Llama-2 style `tokenizer.json` whose added
//! tokens leave a gap in the ids is an error rather than a vocabulary whose
//! positions no longer match the ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value as Json};
use weightkit_core::{Array, Metadata, Value};

use super::spm::{self, Piece};
use super::{Arch, ArchError, ModelConfig, Result};

/// A token's type in `tokenizer.ggml.token_type` (llama.cpp's
/// `llama_token_type`, gguf-py's `TokenType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TokenType {
    /// An ordinary token.
    Normal = 1,
    /// The unknown token.
    Unknown = 2,
    /// A control (special) token.
    Control = 3,
    /// A user-defined (added, not special) token.
    UserDefined = 4,
    /// A padding slot with no token.
    Unused = 5,
    /// A byte-fallback token (`<0x0A>`).
    Byte = 6,
}

/// The largest vocabulary accepted (the converter pads the token list to
/// `vocab_size`, so this bounds what a config can make us allocate; real
/// vocabularies are under 300,000).
pub const MAX_VOCAB: u64 = 1 << 24;

/// Sizes above this are refused when reading a directory (a safety bound,
/// far above real tokenizer files: Gemma's 17 MB `tokenizer.json`).
const MAX_FILE: u64 = 1 << 30;

/// The tokenizer files of a Hugging Face model directory, each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenizerFiles {
    /// `tokenizer.json`.
    pub tokenizer_json: Option<String>,
    /// `tokenizer_config.json`.
    pub tokenizer_config_json: Option<String>,
    /// `tokenizer.model` (SentencePiece).
    pub tokenizer_model: Option<Vec<u8>>,
    /// `added_tokens.json` (used with `tokenizer.model`).
    pub added_tokens_json: Option<String>,
    /// `chat_template.jinja`.
    pub chat_template_jinja: Option<String>,
    /// `additional_chat_templates/*.jinja` as (file stem, template), sorted by
    /// stem (used only with `chat_template.jinja`).
    pub additional_chat_templates: Vec<(String, String)>,
    /// `chat_template.json`.
    pub chat_template_json: Option<String>,
}

impl TokenizerFiles {
    /// Reads whichever of the files `dir` has.
    pub fn read_dir(dir: impl AsRef<Path>) -> Result<TokenizerFiles> {
        let dir = dir.as_ref();
        let text = |name: &str| {
            read_opt(&dir.join(name)).and_then(|b| b.map(|b| utf8(&dir.join(name), b)).transpose())
        };
        let mut additional = Vec::new();
        let extra_dir = dir.join("additional_chat_templates");
        if extra_dir.is_dir() {
            let entries = std::fs::read_dir(&extra_dir).map_err(|source| ArchError::Io {
                path: extra_dir.clone(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| ArchError::Io {
                    path: extra_dir.clone(),
                    source,
                })?;
                let p = e.path();
                if p.extension().is_some_and(|x| x == "jinja")
                    && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                    && let Some(b) = read_opt(&p)?
                {
                    additional.push((stem.to_owned(), utf8(&p, b)?));
                }
            }
            additional.sort();
        }
        Ok(TokenizerFiles {
            tokenizer_json: text("tokenizer.json")?,
            tokenizer_config_json: text("tokenizer_config.json")?,
            tokenizer_model: read_opt(&dir.join("tokenizer.model"))?,
            added_tokens_json: text("added_tokens.json")?,
            chat_template_jinja: text("chat_template.jinja")?,
            additional_chat_templates: additional,
            chat_template_json: text("chat_template.json")?,
        })
    }

    /// Whether there is a vocabulary (`tokenizer.json` or
    /// `tokenizer.model`); without one the metadata is
    /// `tokenizer.ggml.model = "none"`.
    pub fn has_vocab(&self) -> bool {
        self.tokenizer_json.is_some() || self.tokenizer_model.is_some()
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    let io = |source| ArchError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            if m.len() > MAX_FILE {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "file over 1 GiB",
                )));
            }
            std::fs::read(path).map(Some).map_err(io)
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

fn utf8(path: &Path, b: Vec<u8>) -> Result<String> {
    String::from_utf8(b).map_err(|_| ArchError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })
}

/// What the tokenizer conversion needs from the model config and the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerOptions {
    /// The architecture (selects the converter's path).
    pub arch: Arch,
    /// `config.json`'s `vocab_size` (the vocabulary is padded to it).
    pub vocab_size: Option<u64>,
    /// `config.json`'s `<type>_token_id` values (see
    /// [`ModelConfig::token_ids`]).
    pub config_token_ids: BTreeMap<String, Json>,
    /// `tokenizer.ggml.pre` for a byte-level BPE vocabulary; `None` uses the
    /// heuristic described in the [module docs](self).
    pub pre: Option<String>,
}

impl TokenizerOptions {
    /// Options for the model `config` describes (no `pre` override).
    pub fn from_config(config: &ModelConfig) -> Self {
        TokenizerOptions {
            arch: config.arch,
            vocab_size: Some(config.vocab_size),
            config_token_ids: config.token_ids.clone(),
            pre: None,
        }
    }
}

/// The `tokenizer.*` GGUF keys for `files`, in the converter's order (they
/// follow the keys of [`ModelConfig::to_gguf_metadata`]). With no
/// vocabulary file, just `tokenizer.ggml.model = "none"`.
pub fn tokenizer_metadata(files: &TokenizerFiles, opts: &TokenizerOptions) -> Result<Metadata> {
    let mut m = Metadata::new();
    if !files.has_vocab() {
        m.insert("tokenizer.ggml.model", "none");
        return Ok(m);
    }
    let tok_json = match &files.tokenizer_json {
        Some(t) => Some(parse_object(t, "tokenizer.json")?),
        None => None,
    };
    let tok_config = match &files.tokenizer_config_json {
        Some(t) => Some(parse_object(t, "tokenizer_config.json")?),
        None => None,
    };
    let llama = opts.arch.gguf_arch() == "llama";
    if llama && let Some(tc) = &tok_config {
        match tc.get("add_prefix_space") {
            None | Some(Json::Null) => {}
            Some(v) => {
                m.insert("tokenizer.ggml.add_space_prefix", truthy(v));
            }
        }
        if tc.get("tokenizer_class").and_then(Json::as_str) == Some("HybridDNATokenizer") {
            return Err(tok_err(
                "tokenizer_config.json",
                "HybridDNATokenizer is not supported".to_owned(),
            ));
        }
    }
    let ctx = Ctx {
        files,
        opts,
        tok_json: tok_json.as_ref(),
        tok_config: tok_config.as_ref(),
    };
    if files.tokenizer_model.is_some() {
        ctx.sentencepiece(&mut m)?;
    } else if llama && tok_json.as_ref().is_some_and(is_llama_hf) {
        ctx.llama_hf(&mut m)?;
    } else if tok_json
        .as_ref()
        .is_some_and(|j| model_type(j) == Some("Unigram"))
    {
        ctx.sentencepiece(&mut m)?;
    } else {
        ctx.gpt2(&mut m)?;
    }
    if llama {
        // CodeLlama: prefix / suffix / middle / eot (only eot has a GGUF key).
        if opts.vocab_size == Some(32016) {
            let mut sv = ctx.special_vocab(false, &["prefix", "suffix", "middle", "eot"], None)?;
            for (typ, id) in [
                ("prefix", 32007),
                ("suffix", 32008),
                ("middle", 32009),
                ("eot", 32010),
            ] {
                sv.set_special_token(typ, id)?;
            }
            sv.add_to(&mut m);
        }
        // Granite small models.
        if opts.vocab_size == Some(49152) {
            m.insert("tokenizer.ggml.add_bos_token", false);
        }
    }
    Ok(m)
}

struct Ctx<'a> {
    files: &'a TokenizerFiles,
    opts: &'a TokenizerOptions,
    tok_json: Option<&'a Map<String, Json>>,
    tok_config: Option<&'a Map<String, Json>>,
}

/// A token list under construction.
struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

impl Ctx<'_> {
    /// `_set_vocab_sentencepiece` (from `tokenizer.model`, or from a Unigram
    /// `tokenizer.json` standing in for one).
    fn sentencepiece(&self, m: &mut Metadata) -> Result<()> {
        let pieces = match &self.files.tokenizer_model {
            Some(model) => spm::parse_pieces(model)?,
            None => self.unigram_pieces()?,
        };
        let n_pieces = pieces.len();
        let vocab_size = match self.opts.vocab_size {
            Some(v) if v > 0 => vocab_limit(v)?,
            _ => n_pieces,
        };
        let mut v = Vocab {
            tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
            scores: vec![-10000.0; vocab_size],
            types: vec![TokenType::Unused as i32; vocab_size],
        };
        for (id, p) in pieces.into_iter().enumerate().take(vocab_size) {
            v.types[id] = match p.kind {
                spm::UNKNOWN => TokenType::Unknown,
                spm::CONTROL => TokenType::Control,
                spm::UNUSED => TokenType::Unused,
                spm::BYTE => TokenType::Byte,
                _ => TokenType::Normal,
            } as i32;
            v.tokens[id] = p.piece;
            v.scores[id] = p.score;
        }
        // A Unigram tokenizer.json's added tokens past the pieces.
        if self.files.tokenizer_model.is_none() {
            for t in added_tokens(self.tok_json) {
                if let (Some(id), Some(content)) = (t.id, t.content)
                    && id >= n_pieces
                    && id < vocab_size
                {
                    let (token, ty) = classify_added(content, t.special);
                    v.tokens[id] = token;
                    v.scores[id] = -1000.0;
                    v.types[id] = ty as i32;
                }
            }
        }
        if let Some(text) = &self.files.added_tokens_json {
            let added = parse_object(text, "added_tokens.json")?;
            for (content, id) in &added {
                let id = json_index(id).ok_or_else(|| {
                    tok_err("added_tokens.json", format!("{content:?}: bad id {id}"))
                })?;
                if id < vocab_size {
                    v.tokens[id] = content.clone();
                    v.scores[id] = -1000.0;
                    v.types[id] = TokenType::UserDefined as i32;
                }
            }
        }
        if let Some(Json::Object(decoder)) = self
            .tok_config
            .and_then(|tc| tc.get("added_tokens_decoder"))
        {
            for (id, data) in decoder {
                let bad = || {
                    tok_err(
                        "tokenizer_config.json",
                        format!("added_tokens_decoder: bad entry {id:?}"),
                    )
                };
                let id: usize = id.trim().parse().map_err(|_| bad())?;
                let content = data.get("content").and_then(Json::as_str).ok_or_else(bad)?;
                if id >= vocab_size {
                    continue;
                }
                let special = data.get("special").is_some_and(truthy);
                let (token, ty) = classify_added(content, special);
                v.tokens[id] = token;
                v.scores[id] = -1000.0;
                v.types[id] = ty as i32;
            }
        }
        m.insert("tokenizer.ggml.model", "llama");
        m.insert("tokenizer.ggml.pre", "default");
        let n = v.tokens.len();
        self.put_vocab(m, v);
        self.special_vocab(false, DEFAULT_TYPES, Some(n))?.add_to(m);
        Ok(())
    }

    /// The pieces a Unigram `tokenizer.json` transcribes.
    fn unigram_pieces(&self) -> Result<Vec<Piece>> {
        let model = self
            .tok_json
            .and_then(|j| j.get("model"))
            .and_then(Json::as_object);
        let model = model.ok_or_else(|| tok_err("tokenizer.json", "no model".into()))?;
        let vocab = model.get("vocab").and_then(Json::as_array);
        let vocab = vocab.ok_or_else(|| {
            tok_err(
                "tokenizer.json",
                "Unigram model without a vocab list".into(),
            )
        })?;
        let unk = model.get("unk_id").and_then(json_index);
        let byte_fallback = model.get("byte_fallback").is_some_and(truthy);
        let special: HashSet<&str> = added_tokens(self.tok_json)
            .filter(|t| t.special)
            .filter_map(|t| t.content)
            .collect();
        vocab
            .iter()
            .enumerate()
            .map(|(id, e)| {
                let bad = || {
                    tok_err(
                        "tokenizer.json",
                        format!("Unigram vocab entry {id} is not [piece, score]"),
                    )
                };
                let pair = e.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                let piece = pair[0].as_str().ok_or_else(bad)?;
                let score = pair[1].as_f64().ok_or_else(bad)? as f32;
                let kind = if Some(id) == unk {
                    spm::UNKNOWN
                } else if special.contains(piece) {
                    spm::CONTROL
                } else if byte_fallback && is_byte_token(piece) {
                    spm::BYTE
                } else {
                    spm::NORMAL
                };
                Ok(Piece {
                    piece: piece.to_owned(),
                    score,
                    kind,
                })
            })
            .collect()
    }

    /// gguf-py's `LlamaHfVocab` path.
    fn llama_hf(&self, m: &mut Metadata) -> Result<()> {
        const F: &str = "tokenizer.json";
        let model_vocab = model_vocab(self.tok_json)?;
        let base = model_vocab.len();
        let mut vocab = model_vocab.clone();
        for t in added_tokens(self.tok_json) {
            if let (Some(id), Some(c)) = (t.id, t.content) {
                vocab.insert(c.to_owned(), id);
            }
        }
        let mut reverse: HashMap<usize, &str> = HashMap::with_capacity(vocab.len());
        for (c, &id) in &model_vocab {
            reverse.insert(id, c);
        }
        for t in added_tokens(self.tok_json) {
            if let (Some(id), Some(c)) = (t.id, t.content) {
                reverse.insert(id, c);
            }
        }
        // The special tokens transformers names (all_special_tokens).
        let specials: HashMap<String, usize> = self
            .named_special_tokens()
            .into_iter()
            .filter_map(|t| vocab.get(&t).map(|&id| (t, id)))
            .collect();
        let special_ids: HashSet<usize> = specials.values().copied().collect();
        let mut added: Vec<(usize, &str)> = added_tokens(self.tok_json)
            .filter_map(|t| Some((t.id?, t.content?)))
            .filter(|&(id, _)| id >= base)
            .collect();
        added.sort_by_key(|&(id, _)| id);
        added.dedup_by_key(|&mut (id, _)| id);
        let mut v = Vocab {
            tokens: Vec::new(),
            scores: Vec::new(),
            types: Vec::new(),
        };
        for id in 0..base {
            let text = *reverse
                .get(&id)
                .ok_or_else(|| tok_err(F, format!("no token has id {id}")))?;
            let ty = if is_byte_token(text) {
                TokenType::Byte
            } else if special_ids.contains(&id) {
                TokenType::Control
            } else {
                TokenType::Normal
            };
            v.tokens.push(text.to_owned());
            v.scores.push(-1000.0);
            v.types.push(ty as i32);
        }
        for (i, (id, text)) in added.into_iter().enumerate() {
            if id != base + i {
                return Err(tok_err(
                    F,
                    format!(
                        "added token {text:?} has id {id}, leaving a gap after {}",
                        base + i
                    ),
                ));
            }
            let ty = if specials.contains_key(text) {
                TokenType::Control
            } else {
                TokenType::UserDefined
            };
            v.tokens.push(text.to_owned());
            v.scores.push(-1000.0);
            v.types.push(ty as i32);
        }
        m.insert("tokenizer.ggml.model", "llama");
        m.insert("tokenizer.ggml.pre", "default");
        let n = v.tokens.len();
        self.put_vocab(m, v);
        self.special_vocab(false, DEFAULT_TYPES, Some(n))?.add_to(m);
        Ok(())
    }

    /// The special tokens a transformers tokenizer built from these files
    /// names (`all_special_tokens`): `bos_token` ... `mask_token` and
    /// `additional_special_tokens` / `extra_special_tokens` of
    /// `tokenizer_config.json`, with the Llama tokenizer classes' defaults
    /// (`<s>`, `</s>`, `<unk>`) for absent keys.
    fn named_special_tokens(&self) -> Vec<String> {
        let empty = Map::new();
        let tc = self.tok_config.unwrap_or(&empty);
        let class = match tc.get("tokenizer_class").and_then(Json::as_str) {
            Some(c) => c,
            // Without tokenizer_config.json, AutoTokenizer picks the class from config.json.
            None if self.tok_config.is_none() && self.opts.arch.gguf_arch() == "llama" => {
                "LlamaTokenizerFast"
            }
            None => "",
        };
        let llama_class = matches!(
            class,
            "LlamaTokenizer"
                | "LlamaTokenizerFast"
                | "CodeLlamaTokenizer"
                | "CodeLlamaTokenizerFast"
        );
        let mut out = Vec::new();
        for typ in ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] {
            let key = format!("{typ}_token");
            match tc.get(&key) {
                Some(v) => out.extend(token_content(v)),
                None if llama_class => match typ {
                    "bos" => out.push("<s>".to_owned()),
                    "eos" => out.push("</s>".to_owned()),
                    "unk" => out.push("<unk>".to_owned()),
                    _ => {}
                },
                None => {}
            }
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            match tc.get(key) {
                Some(Json::Array(a)) => out.extend(a.iter().filter_map(token_content)),
                Some(Json::Object(o)) => out.extend(o.values().filter_map(token_content)),
                _ => {}
            }
        }
        out
    }

    /// `_set_vocab_gpt2` (with `get_vocab_base`).
    fn gpt2(&self, m: &mut Metadata) -> Result<()> {
        const F: &str = "tokenizer.json";
        let model_vocab = model_vocab(self.tok_json)?;
        let mut reverse: HashMap<usize, &str> = HashMap::with_capacity(model_vocab.len());
        let mut contents: HashSet<&str> = HashSet::with_capacity(model_vocab.len());
        for (c, &id) in &model_vocab {
            reverse.insert(id, c);
            contents.insert(c);
        }
        let mut added_contents: HashSet<&str> = HashSet::new();
        let mut added_by_id: HashMap<usize, bool> = HashMap::new();
        for t in added_tokens(self.tok_json) {
            if let (Some(id), Some(c)) = (t.id, t.content) {
                reverse.insert(id, c);
                contents.insert(c);
                added_contents.insert(c);
                added_by_id.insert(id, t.special);
            }
        }
        let max_id = reverse.keys().copied().max().unwrap_or(0);
        let vocab_size = match self.opts.vocab_size {
            Some(v) => vocab_limit(v)?,
            None => contents.len(),
        };
        if !reverse.is_empty() && max_id >= vocab_size {
            return Err(tok_err(
                F,
                format!("token id {max_id} is not below vocab_size {vocab_size}"),
            ));
        }
        let pre = match &self.opts.pre {
            Some(p) => p.clone(),
            None => guess_pre(self.tok_json)?.to_owned(),
        };
        let mut tokens = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        for i in 0..vocab_size {
            match reverse.get(&i) {
                None => {
                    tokens.push(format!("[PAD{i}]"));
                    types.push(TokenType::Unused as i32);
                }
                Some(&token) if added_contents.contains(token) => {
                    let special = added_by_id.get(&i).copied().unwrap_or(false);
                    if special || does_token_look_special(token) {
                        tokens.push(token.to_owned());
                        types.push(TokenType::Control as i32);
                    } else {
                        tokens.push(token.replace('\u{2581}', " "));
                        types.push(TokenType::UserDefined as i32);
                    }
                }
                Some(&token) => {
                    tokens.push(token.to_owned());
                    types.push(TokenType::Normal as i32);
                }
            }
        }
        m.insert("tokenizer.ggml.model", "gpt2");
        m.insert("tokenizer.ggml.pre", pre);
        put_array(m, "tokenizer.ggml.tokens", Array::String(tokens));
        put_array(m, "tokenizer.ggml.token_type", Array::I32(types));
        self.special_vocab(true, DEFAULT_TYPES, None)?.add_to(m);
        Ok(())
    }

    fn put_vocab(&self, m: &mut Metadata, v: Vocab) {
        put_array(m, "tokenizer.ggml.tokens", Array::String(v.tokens));
        put_array(m, "tokenizer.ggml.scores", Array::F32(v.scores));
        put_array(m, "tokenizer.ggml.token_type", Array::I32(v.types));
    }

    /// gguf-py's `SpecialVocab(path, load_merges, special_token_types, n_vocab)`.
    fn special_vocab(
        &self,
        load_merges: bool,
        types: &[&str],
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab> {
        let mut sv = SpecialVocab {
            merges: Vec::new(),
            ids: Vec::new(),
            add: Vec::new(),
            chat_template: None,
            lowercase: None,
            strip_accents: None,
            types: types.iter().map(|s| (*s).to_owned()).collect(),
            n_vocab,
        };
        sv.load_tokenizer_json(self, load_merges)?;
        // _try_load_from_config_json
        for typ in sv.types.clone() {
            if let Some(v) = self.opts.config_token_ids.get(&typ) {
                sv.set_special_json(&typ, v)?;
            }
        }
        Ok(sv)
    }
}

const DEFAULT_TYPES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// A chat template value: one string or named templates.
#[derive(Clone, Debug)]
enum ChatTemplate {
    One(String),
    Named(Vec<(String, String)>),
}

/// gguf-py's `SpecialVocab`, loaded.
struct SpecialVocab {
    merges: Vec<String>,
    /// Special token ids in insertion order (first set wins).
    ids: Vec<(String, u64)>,
    /// `add_<type>_token` flags in insertion order (Python dict semantics).
    add: Vec<(String, bool)>,
    chat_template: Option<ChatTemplate>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
    types: Vec<String>,
    n_vocab: Option<usize>,
}

impl SpecialVocab {
    fn set_add(&mut self, typ: &str, v: bool) {
        match self.add.iter_mut().find(|(t, _)| t == typ) {
            Some(slot) => slot.1 = v,
            None => self.add.push((typ.to_owned(), v)),
        }
    }

    fn setdefault_add(&mut self, typ: &str, v: bool) {
        if !self.add.iter().any(|(t, _)| t == typ) {
            self.add.push((typ.to_owned(), v));
        }
    }

    fn has_add(&self, typ: &str) -> bool {
        self.add.iter().any(|(t, _)| t == typ)
    }

    /// `_set_special_token` with a JSON value (non-integers are ignored).
    fn set_special_json(&mut self, typ: &str, v: &Json) -> Result<()> {
        if let Some(i) = v.as_i64() {
            if i < 0 {
                return Err(tok_err(
                    "config.json",
                    format!("invalid value for special token type {typ}: {i}"),
                ));
            }
            self.set_special_token(typ, i as u64)?;
        } else if let Some(u) = v.as_u64() {
            self.set_special_token(typ, u)?;
        }
        Ok(())
    }

    fn set_special_token(&mut self, typ: &str, id: u64) -> Result<()> {
        if self.n_vocab.is_none_or(|n| id < n as u64) && !self.ids.iter().any(|(t, _)| t == typ) {
            self.ids.push((typ.to_owned(), id));
        }
        Ok(())
    }

    /// `_try_load_from_tokenizer_json`.
    fn load_tokenizer_json(&mut self, ctx: &Ctx<'_>, load_merges: bool) -> Result<()> {
        let tokenizer = ctx.tok_json.filter(|t| !t.is_empty());
        if let Some(t) = ctx.tok_json {
            if load_merges {
                self.merges = merges(t)?;
            }
            if let Some(n) = t.get("normalizer").filter(|n| truthy(n)) {
                self.parse_normalizer(n);
            }
        }
        let mut tc: Option<Map<String, Json>> = ctx.tok_config.cloned();
        let tc_truthy = |tc: &Option<Map<String, Json>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        if let Some(tokenizer) = tokenizer {
            let get = |tc: &Option<Map<String, Json>>, k: &str| {
                tc.as_ref()
                    .and_then(|m| m.get(k))
                    .cloned()
                    .unwrap_or(Json::Null)
            };
            let mut special_bos = get(&tc, "bos_token");
            let mut special_cls = get(&tc, "cls_token");
            let mut special_eos = get(&tc, "eos_token");
            let mut special_sep = get(&tc, "sep_token");
            if !truthy(&special_bos) && truthy(&special_cls) && tc_truthy(&tc) {
                special_bos = special_cls.clone();
                set(&mut tc, "bos_token", special_bos.clone());
            }
            if !truthy(&special_eos) && truthy(&special_sep) && tc_truthy(&tc) {
                special_eos = special_sep.clone();
                set(&mut tc, "eos_token", special_eos.clone());
            }
            if let Some(pp) = tokenizer.get("post_processor").filter(|p| truthy(p)) {
                let list: Vec<&Json> = match pp.get("processors") {
                    Some(Json::Array(a)) => a.iter().collect(),
                    _ => vec![pp],
                };
                for processor in list {
                    match processor.get("type").and_then(Json::as_str) {
                        Some("ByteLevel") => {
                            self.setdefault_add("bos", false);
                            self.setdefault_add("eos", false);
                        }
                        Some("RobertaProcessing") => {
                            self.set_add("bos", true);
                            self.set_add("eos", true);
                            self.set_add("sep", true);
                            if !truthy(&special_cls) && tc_truthy(&tc) {
                                special_cls = first_of(processor.get("cls"))
                                    .unwrap_or_else(|| special_bos.clone());
                                set(&mut tc, "cls_token", special_cls.clone());
                            }
                            if !truthy(&special_sep) && tc_truthy(&tc) {
                                special_sep = first_of(processor.get("sep"))
                                    .unwrap_or_else(|| special_eos.clone());
                                set(&mut tc, "sep_token", special_sep.clone());
                            }
                        }
                        Some("TemplateProcessing") => {
                            let empty = Vec::new();
                            let single = processor
                                .get("single")
                                .and_then(Json::as_array)
                                .unwrap_or(&empty);
                            let pair = processor
                                .get("pair")
                                .and_then(Json::as_array)
                                .unwrap_or(&empty);
                            let mut special_first: Option<&str> = None;
                            let mut special_last: Option<&str> = None;
                            if single.len() > 1 {
                                special_first = entry_id(&single[0], "SpecialToken");
                                if let Some(first) = special_first {
                                    let first_j = Json::from(first);
                                    if !tc_truthy(&tc) {
                                        special_bos = first_j.clone();
                                    } else if first_j != special_bos && first_j != special_cls {
                                        if !truthy(&special_bos) {
                                            special_bos = first_j.clone();
                                            set(&mut tc, "bos_token", first_j.clone());
                                        }
                                        if !truthy(&special_cls) {
                                            special_cls = first_j.clone();
                                            set(&mut tc, "cls_token", first_j.clone());
                                        }
                                    }
                                    self.set_add(
                                        "bos",
                                        first_j == special_bos || first_j == special_cls,
                                    );
                                }
                                special_last = entry_id(&single[single.len() - 1], "SpecialToken");
                                if let Some(last) = special_last {
                                    let last_j = Json::from(last);
                                    if !tc_truthy(&tc) {
                                        special_eos = last_j.clone();
                                    } else if last_j != special_eos {
                                        if !self.types.iter().any(|t| t == "eot") {
                                            self.types.push("eot".to_owned());
                                            set(&mut tc, "eot_token", special_eos.clone());
                                        } else if !self.types.iter().any(|t| t == "eom") {
                                            self.types.push("eom".to_owned());
                                            set(&mut tc, "eom_token", special_eos.clone());
                                        }
                                        special_eos = last_j.clone();
                                        set(&mut tc, "eos_token", last_j.clone());
                                    }
                                    self.set_add("eos", last_j == special_eos);
                                }
                            }
                            if !pair.is_empty() {
                                let start = usize::from(
                                    special_first.is_some()
                                        && entry_id(&pair[0], "SpecialToken") == special_first,
                                );
                                let stop_trim = special_last.is_some()
                                    && entry_id(&pair[pair.len() - 1], "SpecialToken")
                                        == special_last;
                                let stop = if stop_trim {
                                    pair.len() - 1
                                } else {
                                    pair.len()
                                };
                                let sub = if start < stop {
                                    &pair[start..stop]
                                } else {
                                    &pair[..0]
                                };
                                if !sub.is_empty() {
                                    let a = entry_id(&sub[0], "Sequence");
                                    let b = entry_id(&sub[sub.len() - 1], "Sequence");
                                    if a == Some("A") && b == Some("B") && sub.len() > 2 {
                                        let mid = &sub[1..sub.len() - 1];
                                        let mut add_sep = false;
                                        let in_sep_eos =
                                            |e: &str| special_sep == e || special_eos == e;
                                        if let Some(e) = entry_id(&mid[0], "SpecialToken")
                                            && in_sep_eos(e)
                                            && special_last.is_none()
                                        {
                                            add_sep = true;
                                        }
                                        if mid.len() == 2
                                            && let Some(e) = entry_id(&mid[1], "SpecialToken")
                                            && in_sep_eos(e)
                                        {
                                            add_sep = true;
                                        }
                                        self.set_add("sep", add_sep);
                                        if add_sep && !truthy(&special_sep) && tc_truthy(&tc) {
                                            set(&mut tc, "sep_token", special_eos.clone());
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        // Chat template: tokenizer_config's own, else chat_template.jinja
        // (with additional templates), else chat_template.json.
        let alt = if let Some(j) = &ctx.files.chat_template_jinja {
            if ctx.files.additional_chat_templates.is_empty() {
                Some(ChatTemplate::One(j.clone()))
            } else {
                let mut v = vec![("default".to_owned(), j.clone())];
                v.extend(ctx.files.additional_chat_templates.iter().cloned());
                Some(ChatTemplate::Named(v))
            }
        } else if let Some(text) = &ctx.files.chat_template_json {
            let j = parse_object(text, "chat_template.json")?;
            j.get("chat_template").and_then(chat_template_of)
        } else {
            None
        };
        self.chat_template = match tc.get("chat_template") {
            Some(v) => chat_template_of(v),
            None => alt,
        };
        let added: Vec<AddedToken<'_>> = added_tokens(ctx.tok_json).collect();
        for typ in self.types.clone() {
            if let Some(Json::Bool(b)) = tc.get(&format!("add_{typ}_token"))
                && !self.has_add(&typ)
            {
                self.set_add(&typ, *b);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Json::String(s)) => s.as_str(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            if let Some(t) = added.iter().find(|t| t.content == Some(content))
                && let Some(id) = t.raw_id
            {
                self.set_special_json(&typ, id)?;
            }
        }
        Ok(())
    }

    /// `_parse_normalizer`.
    fn parse_normalizer(&mut self, n: &Json) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                // A JSON null sets gguf-py's value to None, which it does not write.
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = (!v.is_null()).then(|| truthy(v));
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = (!v.is_null()).then(|| truthy(v));
                }
            }
            Some("Sequence") => {
                if let Some(Json::Array(list)) = n.get("normalizers") {
                    for x in list {
                        self.parse_normalizer(x);
                    }
                }
            }
            _ => {}
        }
    }

    /// `add_to_gguf`: only the types gguf-py's writer has a method for.
    fn add_to(self, m: &mut Metadata) {
        if !self.merges.is_empty() {
            put_array(m, "tokenizer.ggml.merges", Array::String(self.merges));
        }
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                _ => continue,
            };
            // Ids past u32 cannot be written; gguf-py would fail too.
            if let Ok(id) = u32::try_from(*id) {
                m.insert(format!("tokenizer.ggml.{key}"), id);
            }
        }
        for (typ, v) in &self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                m.insert(format!("tokenizer.ggml.add_{typ}_token"), *v);
            }
        }
        match self.chat_template {
            None => {}
            Some(ChatTemplate::One(t)) => {
                m.insert("tokenizer.chat_template", t);
            }
            Some(ChatTemplate::Named(list)) => {
                let mut default = None;
                let mut names: Vec<String> = Vec::new();
                for (name, template) in list {
                    let name: String = name
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    if name.is_empty() {
                        continue;
                    }
                    if name == "default" {
                        default = Some(template);
                    } else {
                        m.insert(format!("tokenizer.chat_template.{name}"), template);
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
                if !names.is_empty() {
                    put_array(m, "tokenizer.chat_templates", Array::String(names));
                }
                if let Some(t) = default {
                    m.insert("tokenizer.chat_template", t);
                }
            }
        }
        if let Some(v) = self.lowercase {
            m.insert("tokenizer.ggml.normalizer.lowercase", v);
        }
        if let Some(v) = self.strip_accents {
            m.insert("tokenizer.ggml.normalizer.strip_accents", v);
        }
    }
}

/// gguf-py's `add_array`: empty arrays are not written.
fn put_array(m: &mut Metadata, key: &str, a: Array) {
    if !a.is_empty() {
        m.insert(key, Value::Array(a));
    }
}

fn set(tc: &mut Option<Map<String, Json>>, key: &str, v: Json) {
    if let Some(m) = tc {
        m.insert(key.to_owned(), v);
    }
}

/// `processor.get('cls', [default])[0]`: RobertaProcessing stores `[token, id]`.
fn first_of(v: Option<&Json>) -> Option<Json> {
    match v {
        Some(Json::Array(a)) => a.first().cloned(),
        _ => None,
    }
}

/// `entry.get(kind, {}).get('id')` for a template entry, when a non-empty string.
fn entry_id<'a>(entry: &'a Json, kind: &str) -> Option<&'a str> {
    entry
        .get(kind)?
        .get("id")?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn chat_template_of(v: &Json) -> Option<ChatTemplate> {
    match v {
        Json::String(s) => Some(ChatTemplate::One(s.clone())),
        Json::Array(list) => Some(ChatTemplate::Named(
            list.iter()
                .filter_map(|c| {
                    let name = c.get("name").and_then(Json::as_str).unwrap_or("");
                    let template = c.get("template")?.as_str()?;
                    Some((name.to_owned(), template.to_owned()))
                })
                .collect(),
        )),
        _ => None,
    }
}

/// The merges of a BPE `tokenizer.json`, as gguf-py writes them: `"a b"`
/// strings (the pair form of transformers >= 4.45 joined with a space, spaces
/// inside a part written as U+0120).
fn merges(t: &Map<String, Json>) -> Result<Vec<String>> {
    let Some(Json::Array(list)) = t.get("model").and_then(|m| m.get("merges")) else {
        return Ok(Vec::new());
    };
    let Some(first) = list.first() else {
        return Ok(Vec::new());
    };
    let bad = || {
        tok_err(
            "tokenizer.json",
            "Unknown tokenizer merges format".to_owned(),
        )
    };
    if first.is_string() {
        return list
            .iter()
            .map(|m| m.as_str().map(str::to_owned).ok_or_else(bad))
            .collect();
    }
    let is_pair = |m: &Json| {
        m.as_array()
            .is_some_and(|p| p.len() == 2 && p[0].is_string())
    };
    if !is_pair(first) {
        return Err(bad());
    }
    list.iter()
        .map(|m| {
            let p = m.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
            let enc = |s: &Json| {
                s.as_str()
                    .map(|s| s.replace(' ', "\u{120}"))
                    .ok_or_else(bad)
            };
            Ok(format!("{} {}", enc(&p[0])?, enc(&p[1])?))
        })
        .collect()
}

/// An entry of `tokenizer.json`'s `added_tokens`.
struct AddedToken<'a> {
    id: Option<usize>,
    raw_id: Option<&'a Json>,
    content: Option<&'a str>,
    special: bool,
}

fn added_tokens<'a>(t: Option<&'a Map<String, Json>>) -> impl Iterator<Item = AddedToken<'a>> {
    t.and_then(|t| t.get("added_tokens"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|a| AddedToken {
            id: a.get("id").and_then(json_index),
            raw_id: a.get("id"),
            content: a.get("content").and_then(Json::as_str),
            special: a.get("special").is_some_and(truthy),
        })
}

/// The BPE (or WordPiece) model vocabulary: content -> id.
fn model_vocab(t: Option<&Map<String, Json>>) -> Result<HashMap<String, usize>> {
    const F: &str = "tokenizer.json";
    let vocab = t.and_then(|t| t.get("model")).and_then(|m| m.get("vocab"));
    let Some(Json::Object(vocab)) = vocab else {
        return Err(tok_err(
            F,
            "model.vocab is not a token -> id map".to_owned(),
        ));
    };
    vocab
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                json_index(v).ok_or_else(|| tok_err(F, format!("token {k:?} has id {v}")))?,
            ))
        })
        .collect()
}

fn model_type(t: &Map<String, Json>) -> Option<&str> {
    t.get("model")?.get("type")?.as_str()
}

/// gguf-py `LlamaHfVocab`'s test: a byte-fallback BPE with a `Sequence`
/// decoder, not Llama 3 (`ignore_merges` without byte fallback).
fn is_llama_hf(t: &Map<String, Json>) -> bool {
    let Some(model) = t.get("model") else {
        return false;
    };
    let ty = model.get("type").and_then(Json::as_str);
    let flag = |k: &str, default: bool| model.get(k).map_or(default, truthy);
    let is_llama3 =
        ty == Some("BPE") && flag("ignore_merges", false) && !flag("byte_fallback", true);
    !is_llama3
        && ty == Some("BPE")
        && flag("byte_fallback", false)
        && t.get("decoder")
            .and_then(|d| d.get("type"))
            .and_then(Json::as_str)
            == Some("Sequence")
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` heuristic (see the module docs).
fn guess_pre(t: Option<&Map<String, Json>>) -> Result<&'static str> {
    let pre = t
        .and_then(|t| t.get("pre_tokenizer"))
        .unwrap_or(&Json::Null);
    let list: Vec<&Json> = match pre.get("pretokenizers") {
        Some(Json::Array(a)) => a.iter().collect(),
        _ => vec![pre],
    };
    fn ty(j: &Json) -> Option<&str> {
        j.get("type").and_then(Json::as_str)
    }
    fn regex(j: &Json) -> Option<&str> {
        j.get("pattern")
            .and_then(|p| p.get("Regex"))
            .and_then(Json::as_str)
    }
    let found = match list.as_slice() {
        [split, bl] if ty(split) == Some("Split") && ty(bl) == Some("ByteLevel") => {
            match regex(split) {
                Some(LLAMA3_REGEX) => Some("llama-bpe"),
                Some(QWEN2_REGEX) => Some("qwen2"),
                _ => None,
            }
        }
        [bl] if ty(bl) == Some("ByteLevel") && bl.get("use_regex").is_none_or(truthy) => {
            Some("gpt-2")
        }
        _ => None,
    };
    found.ok_or_else(|| {
        tok_err(
            "tokenizer.json",
            "cannot tell the BPE pre-tokenizer (tokenizer.ggml.pre) from the pre_tokenizer: \
             known are the Llama-3 regex (llama-bpe), the Qwen2 regex (qwen2) and GPT-2's ByteLevel (gpt-2); \
             name it with TokenizerOptions::pre"
                .to_owned(),
        )
    })
}

/// `does_token_look_special`.
fn does_token_look_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// An added token's text and type, as the SentencePiece path's
/// `added_tokens_decoder` handling (and `get_vocab_base`) decide them.
fn classify_added(content: &str, special: bool) -> (String, TokenType) {
    if special || does_token_look_special(content) {
        (content.to_owned(), TokenType::Control)
    } else {
        (content.replace('\u{2581}', " "), TokenType::UserDefined)
    }
}

/// `<0xAB>`.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

/// A tokenizer_config token entry: a string or an `AddedToken` dict.
fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

fn vocab_limit(v: u64) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|_| v <= MAX_VOCAB)
        .ok_or_else(|| {
            tok_err(
                "config.json",
                format!("vocab_size {v} is over the {MAX_VOCAB} limit"),
            )
        })
}

fn json_index(v: &Json) -> Option<usize> {
    v.as_u64().and_then(|u| usize::try_from(u).ok())
}

fn parse_object(text: &str, file: &'static str) -> Result<Map<String, Json>> {
    match serde_json::from_str(text).map_err(|source| ArchError::Json { file, source })? {
        Json::Object(m) => Ok(m),
        _ => Err(tok_err(file, "not a JSON object".to_owned())),
    }
}

fn tok_err(file: &'static str, reason: String) -> ArchError {
    ArchError::Tokenizer { file, reason }
}
