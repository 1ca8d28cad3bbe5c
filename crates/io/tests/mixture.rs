//! llama-quantize's per-tensor type choice (`weightkit_io::mixture`).
//!
//! The expectations are written out by hand from `src/llama-quant.cpp`'s
//! rules, per mixture, as data (which layers get more bits, which type each
//! tensor family gets), never computed by the code under test.

use weightkit_core::{Array, DType, Metadata, Value};
use weightkit_io::mixture::{
    ALL_MIXTURES, Category, Choice, Exclusion, Mixture, MixtureError, ModelDesc, Options, Reason,
    TensorDesc, choose_types, parse_override,
};

use DType::*;

// ------------------------------------------------------------ model shapes

/// A tensor list: (name, shape, dtype).
type Model = Vec<(String, Vec<usize>, DType)>;

fn descs(model: &Model) -> Vec<TensorDesc<'_>> {
    model
        .iter()
        .map(|(n, s, d)| TensorDesc::new(n, s, *d))
        .collect()
}

/// Llama-7B in convert_hf_to_gguf's order, all F32: 32 layers, n_embd 4096,
/// n_ff 11008, vocab 32000; k/v have `n_kv_rows` rows (4096 for MHA, 1024
/// for the GQA variant with 8 KV heads).
fn llama_7b(n_kv_rows: usize, dtype: DType) -> Model {
    let mut m: Model = vec![("token_embd.weight".into(), vec![32000, 4096], dtype)];
    for i in 0..32 {
        let t = |w: &str, s: &[usize], d: DType| (format!("blk.{i}.{w}"), s.to_vec(), d);
        m.push(t("attn_norm.weight", &[4096], F32));
        m.push(t("attn_q.weight", &[4096, 4096], dtype));
        m.push(t("attn_k.weight", &[n_kv_rows, 4096], dtype));
        m.push(t("attn_v.weight", &[n_kv_rows, 4096], dtype));
        m.push(t("attn_output.weight", &[4096, 4096], dtype));
        m.push(t("ffn_gate.weight", &[11008, 4096], dtype));
        m.push(t("ffn_up.weight", &[11008, 4096], dtype));
        m.push(t("ffn_down.weight", &[4096, 11008], dtype));
        m.push(t("ffn_norm.weight", &[4096], F32));
    }
    m.push(("output_norm.weight".into(), vec![4096], F32));
    m.push(("output.weight".into(), vec![32000, 4096], dtype));
    m
}

fn choose(m: Mixture, model: &ModelDesc, tensors: &Model, opts: &Options) -> Vec<Choice> {
    choose_types(m, model, &descs(tensors), opts).unwrap_or_else(|e| panic!("{m}: {e}"))
}

fn target_of<'a>(tensors: &'a Model, choices: &'a [Choice], name: &str) -> &'a Choice {
    let i = tensors
        .iter()
        .position(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    &choices[i]
}

// ------------------------------------------------- the expectations, as data

/// `use_more_bits(i, 32)` written out: i < 4, i >= 28, or (i - 4) % 3 == 2.
const MORE_BITS_32: &[u32] = &[0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];
/// `i < 32 / 8`.
const FIRST_4: &[u32] = &[0, 1, 2, 3];
/// `i < 32 / 16` (ffn_down) and `i_attention_wv < 2` (attn_v).
const FIRST_2: &[u32] = &[0, 1];
const NONE: &[u32] = &[];

/// A per-layer rule: the type of `layers`, and of the others.
#[derive(Clone, Copy)]
struct Layered {
    layers: &'static [u32],
    hit: DType,
    rest: DType,
}

const fn all(t: DType) -> Layered {
    Layered {
        layers: NONE,
        hit: t,
        rest: t,
    }
}

const fn split(layers: &'static [u32], hit: DType, rest: DType) -> Layered {
    Layered { layers, hit, rest }
}

impl Layered {
    fn at(&self, layer: u32) -> DType {
        if self.layers.contains(&layer) {
            self.hit
        } else {
            self.rest
        }
    }
}

/// What one mixture gives each tensor family of the Llama-7B list.
struct Spec {
    token_embd: DType,
    output: DType,
    attn_q_k: DType,
    attn_v: Layered,
    attn_output: DType,
    ffn_gate_up: DType,
    ffn_down: Layered,
}

/// The rules of `llama_tensor_get_type_impl` for a dense, non-Falcon,
/// non-70B Llama with 32 layers, per mixture. `gqa`: n_head / n_head_kv is
/// 4 (else 1). `imatrix`: an importance matrix is given.
fn spec(m: Mixture, gqa: bool, imatrix: bool) -> Spec {
    // Every 2-D weight in the default type, output.weight in Q6_K.
    let plain = |t: DType| Spec {
        token_embd: t,
        output: Q6_K,
        attn_q_k: t,
        attn_v: all(t),
        attn_output: t,
        ffn_gate_up: t,
        ffn_down: all(t),
    };
    match m {
        Mixture::F32 => Spec {
            output: F32,
            ..plain(F32)
        },
        Mixture::F16 => Spec {
            output: F16,
            ..plain(F16)
        },
        Mixture::BF16 => Spec {
            output: BF16,
            ..plain(BF16)
        },
        Mixture::Q8_0 => Spec {
            output: Q8_0,
            ..plain(Q8_0)
        },
        Mixture::Q4_0 if imatrix => Spec {
            ffn_down: split(FIRST_4, Q4_1, Q4_0),
            ..plain(Q4_0)
        },
        Mixture::Q5_0 if imatrix => Spec {
            ffn_down: split(FIRST_4, Q5_1, Q5_0),
            ..plain(Q5_0)
        },
        Mixture::Q4_0 => plain(Q4_0),
        Mixture::Q5_0 => plain(Q5_0),
        Mixture::Q4_1 => plain(Q4_1),
        Mixture::Q5_1 => plain(Q5_1),
        Mixture::Q2_K => Spec {
            attn_v: all(if gqa { Q4_K } else { Q3_K }),
            attn_output: Q3_K,
            ffn_down: all(Q3_K),
            ..plain(Q2_K)
        },
        Mixture::Q2_K_S => Spec {
            attn_v: all(if gqa { Q4_K } else { Q2_K }),
            ffn_down: split(FIRST_4, Q4_K, Q2_K),
            ..plain(Q2_K)
        },
        Mixture::Q3_K_S => plain(Q3_K),
        Mixture::Q3_K_M => Spec {
            attn_v: split(FIRST_2, Q5_K, Q4_K),
            attn_output: Q4_K,
            ffn_down: split(FIRST_2, Q5_K, Q4_K),
            ..plain(Q3_K)
        },
        Mixture::Q3_K_L => Spec {
            attn_v: all(Q5_K),
            attn_output: Q5_K,
            ffn_down: all(Q5_K),
            ..plain(Q3_K)
        },
        Mixture::Q4_K_S => Spec {
            attn_v: split(FIRST_4, Q5_K, Q4_K),
            ffn_down: split(FIRST_4, Q5_K, Q4_K),
            ..plain(Q4_K)
        },
        Mixture::Q4_K_M => Spec {
            attn_v: split(MORE_BITS_32, Q6_K, Q4_K),
            ffn_down: split(MORE_BITS_32, Q6_K, Q4_K),
            ..plain(Q4_K)
        },
        Mixture::Q5_K_S => plain(Q5_K),
        Mixture::Q5_K_M => Spec {
            attn_v: split(MORE_BITS_32, Q6_K, Q5_K),
            ffn_down: split(MORE_BITS_32, Q6_K, Q5_K),
            ..plain(Q5_K)
        },
        Mixture::Q6_K => plain(Q6_K),
        Mixture::IQ4_NL | Mixture::IQ4_XS => {
            let t = m.default_type();
            Spec {
                attn_v: all(if gqa { Q5_K } else { t }),
                ffn_down: if imatrix {
                    all(t)
                } else {
                    split(FIRST_4, Q5_K, t)
                },
                ..plain(t)
            }
        }
        Mixture::TQ1_0 | Mixture::TQ2_0 | Mixture::Q2_0 => Spec {
            token_embd: Q4_K,
            ..plain(m.default_type())
        },
        Mixture::Q1_0 => plain(Q1_0),
        other => panic!("no spec for {other}"),
    }
}

fn expected(spec: &Spec, name: &str) -> Option<DType> {
    match name {
        "token_embd.weight" => return Some(spec.token_embd),
        "output.weight" => return Some(spec.output),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, tensor) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    Some(match tensor {
        "attn_q.weight" | "attn_k.weight" => spec.attn_q_k,
        "attn_v.weight" => spec.attn_v.at(layer),
        "attn_output.weight" => spec.attn_output,
        "ffn_gate.weight" | "ffn_up.weight" => spec.ffn_gate_up,
        "ffn_down.weight" => spec.ffn_down.at(layer),
        _ => return None,
    })
}

#[test]
fn every_mixture_on_llama_7b_matches_the_rules() {
    let mut checked = 0;
    for &gqa in &[false, true] {
        let (kv_rows, n_head_kv) = if gqa { (1024, 8) } else { (4096, 32) };
        let tensors = llama_7b(kv_rows, F32);
        let model = ModelDesc::new("llama", 32, 32, n_head_kv);
        assert_eq!(model.n_gqa(), if gqa { 4 } else { 1 });
        for &imatrix in &[false, true] {
            for m in ALL_MIXTURES {
                if m == Mixture::Q2_K_S && !imatrix {
                    continue; // refused without an importance matrix (tested below)
                }
                let opts = Options {
                    has_imatrix: imatrix,
                    ..Options::default()
                };
                let s = spec(m, gqa, imatrix);
                let choices = choose(m, &model, &tensors, &opts);
                assert_eq!(choices.len(), tensors.len());
                for ((name, shape, src), c) in tensors.iter().zip(&choices) {
                    let ctx = format!("{m} gqa={gqa} imatrix={imatrix} {name}");
                    assert_eq!(c.source, *src, "{ctx}");
                    assert_eq!(c.fallback_from, None, "{ctx}");
                    match expected(&s, name) {
                        Some(t) => {
                            assert_eq!(c.target, t, "{ctx}");
                            let float = matches!(m, Mixture::F32 | Mixture::F16 | Mixture::BF16);
                            let reason = if float {
                                Reason::FloatMixture
                            } else {
                                Reason::Rules(Category::of(name))
                            };
                            assert_eq!(c.reason, reason, "{ctx}");
                            let needs = m == Mixture::Q2_K_S
                                && t == Q2_K
                                && !matches!(name.as_str(), "token_embd.weight" | "output.weight");
                            assert_eq!(c.requires_imatrix, needs, "{ctx}");
                        }
                        None => {
                            // Norms: 1-D, kept in F32.
                            assert_eq!(shape.len(), 1, "{ctx}");
                            assert_eq!(c.target, F32, "{ctx}");
                            assert!(!c.converts(), "{ctx}");
                            assert_eq!(
                                c.reason,
                                Reason::Kept(Exclusion::FewerThanTwoDims),
                                "{ctx}"
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * (2 * 24 - 1) * (1 + 32 * 9 + 2));
}

#[test]
fn choice_does_not_depend_on_the_order_given() {
    let tensors = llama_7b(1024, F16);
    let model = ModelDesc::new("llama", 32, 32, 8);
    for m in [
        Mixture::Q4_K_M,
        Mixture::Q3_K_M,
        Mixture::Q5_K_M,
        Mixture::Q4_K_S,
    ] {
        let base = choose(m, &model, &tensors, &Options::default());
        // A fixed permutation: reversed, then every 7th moved to the front.
        let mut shuffled: Vec<usize> = (0..tensors.len()).rev().collect();
        shuffled.sort_by_key(|i| i % 7 != 0);
        let permuted: Model = shuffled.iter().map(|&i| tensors[i].clone()).collect();
        let got = choose(m, &model, &permuted, &Options::default());
        for (k, &i) in shuffled.iter().enumerate() {
            assert_eq!(got[k], base[i], "{m} {}", tensors[i].0);
        }
    }
}

// ------------------------------------------------------------ names, ftypes

#[test]
fn names_ftypes_and_default_types() {
    // (name, llama_ftype, default type): include/llama.h and
    // llama_ftype_get_default_type.
    let table: &[(&str, u32, DType)] = &[
        ("F32", 0, F32),
        ("F16", 1, F16),
        ("Q4_0", 2, Q4_0),
        ("Q4_1", 3, Q4_1),
        ("Q8_0", 7, Q8_0),
        ("Q5_0", 8, Q5_0),
        ("Q5_1", 9, Q5_1),
        ("Q2_K", 10, Q2_K),
        ("Q3_K_S", 11, Q3_K),
        ("Q3_K_M", 12, Q3_K),
        ("Q3_K_L", 13, Q3_K),
        ("Q4_K_S", 14, Q4_K),
        ("Q4_K_M", 15, Q4_K),
        ("Q5_K_S", 16, Q5_K),
        ("Q5_K_M", 17, Q5_K),
        ("Q6_K", 18, Q6_K),
        ("Q2_K_S", 21, Q2_K),
        ("IQ4_NL", 25, IQ4_NL),
        ("IQ4_XS", 30, IQ4_XS),
        ("BF16", 32, BF16),
        ("TQ1_0", 36, TQ1_0),
        ("TQ2_0", 37, TQ2_0),
        ("Q1_0", 40, Q1_0),
        ("Q2_0", 41, Q2_0),
    ];
    assert_eq!(table.len(), ALL_MIXTURES.len());
    for &(name, ftype, default) in table {
        let m = Mixture::from_name(name).unwrap();
        assert_eq!(m.name(), name);
        assert_eq!(m.to_string(), name);
        assert_eq!(m.ftype(), ftype, "{name}");
        assert_eq!(m.default_type(), default, "{name}");
        assert_eq!(Mixture::from_ftype(ftype), Some(m));
        assert_eq!(Mixture::from_name(&ftype.to_string()).unwrap(), m);
        assert_eq!(Mixture::from_name(&name.to_lowercase()).unwrap(), m);
        assert_eq!(name.parse::<Mixture>().unwrap(), m);
    }
    for (alias, m) in [
        ("Q3_K", Mixture::Q3_K_M),
        ("q4_k", Mixture::Q4_K_M),
        ("Q5_K", Mixture::Q5_K_M),
    ] {
        assert_eq!(Mixture::from_name(alias).unwrap(), m);
    }
    for bad in ["", "Q4", "IQ2_XXS", "COPY", "Q4_K_MM", "99", "-1", "15 "] {
        let e = Mixture::from_name(bad).unwrap_err();
        assert!(matches!(e, MixtureError::UnknownMixture { .. }), "{bad}");
        assert!(e.to_string().contains("Q4_K_M"), "{e}");
    }
    assert_eq!(Mixture::from_ftype(4), None);
}

// --------------------------------------------------------------- overrides

#[test]
fn overrides_first_match_wins_and_skip_the_rules_and_their_counters() {
    let tensors = llama_7b(4096, F32);
    let model = ModelDesc::new("llama", 32, 32, 32);
    let opts = Options {
        overrides: vec![parse_override("BLK\\.0\\.attn_v=q8_0").unwrap()],
        ..Options::default()
    };
    let c = choose(Mixture::Q3_K_M, &model, &tensors, &opts);
    let t = |name: &str| target_of(&tensors, &c, name);
    assert_eq!(t("blk.0.attn_v.weight").target, Q8_0);
    assert_eq!(t("blk.0.attn_v.weight").reason, Reason::Override(0));
    // The override did not advance i_attention_wv, so the next two attn_v
    // are the "first two" of Q3_K_M's rule.
    assert_eq!(t("blk.1.attn_v.weight").target, Q5_K);
    assert_eq!(t("blk.2.attn_v.weight").target, Q5_K);
    assert_eq!(t("blk.3.attn_v.weight").target, Q4_K);
    // The ffn_down rule uses its own counter, untouched.
    assert_eq!(t("blk.1.ffn_down.weight").target, Q5_K);
    assert_eq!(t("blk.2.ffn_down.weight").target, Q4_K);

    // First match wins: the second pattern never applies to attn_v.
    let opts = Options {
        overrides: vec![
            parse_override("attn_v=q8_0").unwrap(),
            parse_override("blk\\.1\\.attn_v=q6_k").unwrap(),
            parse_override("ffn_down=q5_0").unwrap(),
        ],
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    for (i, (name, _, _)) in tensors.iter().enumerate() {
        if name.ends_with("attn_v.weight") {
            assert_eq!(
                (c[i].target, c[i].reason),
                (Q8_0, Reason::Override(0)),
                "{name}"
            );
        }
        if name.ends_with("ffn_down.weight") {
            assert_eq!(
                (c[i].target, c[i].reason),
                (Q5_0, Reason::Override(2)),
                "{name}"
            );
        }
    }
    // Overrides also win over the output rule (they are tested first).
    let opts = Options {
        overrides: vec![parse_override("output=q4_k").unwrap()],
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    assert_eq!(target_of(&tensors, &c, "output.weight").target, Q4_K);
}

#[test]
fn float_mixtures_ignore_overrides() {
    let tensors = llama_7b(4096, F32);
    let model = ModelDesc::new("llama", 32, 32, 32);
    let opts = Options {
        overrides: vec![parse_override("attn_v=q8_0").unwrap()],
        ..Options::default()
    };
    let c = choose(Mixture::F16, &model, &tensors, &opts);
    let v = target_of(&tensors, &c, "blk.0.attn_v.weight");
    assert_eq!((v.target, v.reason), (F16, Reason::FloatMixture));
}

#[test]
fn parse_override_mirrors_llama_quantize() {
    let (re, t) = parse_override("Attn_Q=Q8_0").unwrap();
    assert_eq!(re.as_str(), "attn_q");
    assert_eq!(t, Q8_0);
    let (_, t) = parse_override("ffn_down=f16").unwrap();
    assert_eq!(t, F16);
    let (re, t) = parse_override("blk\\.[0-3]\\.ffn_(up|gate)=iq4_xs").unwrap();
    assert!(re.is_match("blk.2.ffn_gate.weight"));
    assert_eq!(t, IQ4_XS);
    for bad in [
        "attn_q",
        "=q8_0",
        "attn_q=",
        "attn_q=q9_9",
        "attn_q=F8_E4M3",
    ] {
        assert!(
            matches!(
                parse_override(bad),
                Err(MixtureError::InvalidOverride { .. })
            ),
            "{bad}"
        );
    }
    let e = parse_override("attn_(q=q8_0").unwrap_err();
    assert!(matches!(e, MixtureError::OverrideRegex { .. }));
    assert!(std::error::Error::source(&e).is_some());
}

// -------------------------------------------------------------------- pure

#[test]
fn pure_puts_every_quantizable_tensor_in_the_default_type() {
    let tensors = llama_7b(1024, F32);
    let model = ModelDesc::new("llama", 32, 32, 8);
    let opts = Options {
        pure: true,
        ..Options::default()
    };
    for m in [
        Mixture::Q4_K_M,
        Mixture::Q2_K,
        Mixture::Q4_0,
        Mixture::TQ1_0,
    ] {
        let c = choose(m, &model, &tensors, &opts);
        for ((name, shape, _), c) in tensors.iter().zip(&c) {
            if shape.len() == 1 {
                assert_eq!(c.target, F32, "{name}");
            } else {
                assert_eq!(
                    (c.target, c.reason),
                    (m.default_type(), Reason::Pure),
                    "{m} {name}"
                );
            }
        }
    }
    // --output-tensor-type and overrides still apply.
    let opts = Options {
        pure: true,
        output_tensor_type: Some(Q8_0),
        overrides: vec![parse_override("attn_k=q5_k").unwrap()],
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    assert_eq!(target_of(&tensors, &c, "output.weight").target, Q8_0);
    assert_eq!(target_of(&tensors, &c, "blk.5.attn_k.weight").target, Q5_K);
    assert_eq!(target_of(&tensors, &c, "blk.5.attn_v.weight").target, Q4_K);
}

// --------------------------------------------------------------- fallbacks

/// (mixture, row length, expected target, expected fallback_from) for a
/// plain 2-D weight (`blk.0.attn_q.weight`): `tensor_type_fallback`.
#[test]
fn row_lengths_that_do_not_fit_fall_back() {
    let cases: &[(Mixture, usize, DType, Option<DType>)] = &[
        (Mixture::Q2_K, 4128, Q4_0, Some(Q2_K)),
        (Mixture::Q2_K, 4100, F16, Some(Q2_K)),
        (Mixture::Q3_K_S, 4128, Q4_0, Some(Q3_K)),
        (Mixture::Q3_K_S, 4100, F16, Some(Q3_K)),
        (Mixture::Q4_K_S, 4128, Q5_0, Some(Q4_K)),
        (Mixture::Q4_K_M, 4128, Q5_0, Some(Q4_K)),
        (Mixture::Q4_K_M, 4100, F16, Some(Q4_K)),
        (Mixture::Q5_K_S, 4128, Q5_1, Some(Q5_K)),
        (Mixture::Q6_K, 4128, Q8_0, Some(Q6_K)),
        (Mixture::Q6_K, 4100, F16, Some(Q6_K)),
        (Mixture::IQ4_XS, 4128, IQ4_NL, Some(IQ4_XS)),
        (Mixture::IQ4_XS, 4100, F16, Some(IQ4_XS)),
        (Mixture::TQ1_0, 4128, Q4_0, Some(TQ1_0)),
        (Mixture::TQ2_0, 4128, Q4_0, Some(TQ2_0)),
        (Mixture::Q2_0, 4128, Q4_0, Some(Q2_0)),
        (Mixture::Q2_0, 4100, F16, Some(Q2_0)),
        (Mixture::Q4_0, 4128, Q4_0, None),
        (Mixture::IQ4_NL, 4128, IQ4_NL, None),
        (Mixture::F16, 4100, F16, None),
    ];
    let model = ModelDesc::new("llama", 1, 32, 32);
    for &(m, row, target, from) in cases {
        let tensors: Model = vec![
            ("blk.0.attn_q.weight".into(), vec![64, row], F32),
            ("output.weight".into(), vec![64, 4096], F32),
        ];
        let c = choose(m, &model, &tensors, &Options::default());
        assert_eq!(
            (c[0].target, c[0].fallback_from),
            (target, from),
            "{m} row {row}"
        );
    }
    // Types without a fallback refuse (llama.cpp: "no tensor type fallback
    // is defined for type q4_0").
    for (m, row) in [
        (Mixture::Q4_0, 4100),
        (Mixture::Q8_0, 4100),
        (Mixture::IQ4_NL, 4100),
        (Mixture::Q5_1, 100),
        (Mixture::Q1_0, 4160),
    ] {
        let tensors: Model = vec![("blk.0.attn_q.weight".into(), vec![64, row], F32)];
        match choose_types(m, &model, &descs(&tensors), &Options::default()) {
            Err(MixtureError::NoFallback {
                name,
                dtype,
                row: r,
            }) => {
                assert_eq!(
                    (name.as_str(), dtype, r),
                    ("blk.0.attn_q.weight", m.default_type(), row)
                );
            }
            other => panic!("{m} row {row}: {other:?}"),
        }
    }
}

#[test]
fn output_rule_and_fallback_on_odd_rows() {
    let model = ModelDesc::new("llama", 1, 32, 32);
    let case = |m: Mixture, row: usize| {
        let tensors: Model = vec![
            ("blk.0.attn_v.weight".into(), vec![row, row], F32),
            ("output.weight".into(), vec![100, row], F32),
        ];
        choose_types(m, &model, &descs(&tensors), &Options::default())
    };
    // Row not a multiple of the default type's block: Q8_0, no fallback.
    let c = case(Mixture::Q4_K_M, 4128).unwrap();
    assert_eq!((c[1].target, c[1].fallback_from), (Q8_0, None));
    // use_more_bits(0, 1): Q6_K, which falls back to Q8_0.
    assert_eq!((c[0].target, c[0].fallback_from), (Q8_0, Some(Q6_K)));
    // Q4_0's block divides 4128, so the output gets Q6_K, which does not.
    let c = case(Mixture::Q4_0, 4128).unwrap();
    assert_eq!((c[1].target, c[1].fallback_from), (Q8_0, Some(Q6_K)));
    // A row no block divides: the output rule picks Q8_0, and Q8_0 has no
    // fallback.
    assert!(matches!(
        case(Mixture::Q4_K_M, 4100),
        Err(MixtureError::NoFallback { dtype: Q8_0, .. })
    ));
}

/// The project's tiny-llama fixture (hidden 64, intermediate 172, vocab
/// 256, 2 layers, 4 heads, 2 KV heads): no row is a multiple of 256, and
/// ffn_down's 172 is not even a multiple of 32.
fn tiny_llama() -> Model {
    let mut m: Model = vec![("token_embd.weight".into(), vec![256, 64], F32)];
    for i in 0..2 {
        let t = |w: &str, s: &[usize]| (format!("blk.{i}.{w}"), s.to_vec(), F32);
        m.push(t("attn_norm.weight", &[64]));
        m.push(t("attn_q.weight", &[64, 64]));
        m.push(t("attn_k.weight", &[32, 64]));
        m.push(t("attn_v.weight", &[32, 64]));
        m.push(t("attn_output.weight", &[64, 64]));
        m.push(t("ffn_gate.weight", &[172, 64]));
        m.push(t("ffn_up.weight", &[172, 64]));
        m.push(t("ffn_down.weight", &[64, 172]));
        m.push(t("ffn_norm.weight", &[64]));
    }
    m.push(("output_norm.weight".into(), vec![64], F32));
    m.push(("output.weight".into(), vec![256, 64], F32));
    m
}

#[test]
fn tiny_llama_q4_k_m_falls_back_everywhere() {
    let tensors = tiny_llama();
    let model = ModelDesc::new("llama", 2, 4, 2);
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &Options::default());
    let want: &[(&str, DType, Option<DType>)] = &[
        ("token_embd.weight", Q5_0, Some(Q4_K)),
        ("output.weight", Q8_0, None),
        ("blk.0.attn_q.weight", Q5_0, Some(Q4_K)),
        ("blk.0.attn_k.weight", Q5_0, Some(Q4_K)),
        // use_more_bits(0, 2) is false, use_more_bits(1, 2) true.
        ("blk.0.attn_v.weight", Q5_0, Some(Q4_K)),
        ("blk.1.attn_v.weight", Q8_0, Some(Q6_K)),
        ("blk.0.ffn_gate.weight", Q5_0, Some(Q4_K)),
        ("blk.1.ffn_up.weight", Q5_0, Some(Q4_K)),
        // 172 is not a multiple of 32: F16.
        ("blk.0.ffn_down.weight", F16, Some(Q4_K)),
        ("blk.1.ffn_down.weight", F16, Some(Q6_K)),
        ("blk.1.ffn_norm.weight", F32, None),
    ];
    for &(name, target, from) in want {
        let got = target_of(&tensors, &c, name);
        assert_eq!((got.target, got.fallback_from), (target, from), "{name}");
    }
    // llama-quantize cannot make a Q8_0 of this model: ffn_down's rows of
    // 172 are not whole Q8_0 blocks and Q8_0 has no fallback.
    let e = choose_types(Mixture::Q8_0, &model, &descs(&tensors), &Options::default()).unwrap_err();
    match e {
        MixtureError::NoFallback { name, dtype, row } => {
            assert_eq!(
                (name.as_str(), dtype, row),
                ("blk.0.ffn_down.weight", Q8_0, 172)
            );
        }
        other => panic!("{other:?}"),
    }
}

// ------------------------------------- token embeddings and the output tensor

#[test]
fn tied_embeddings_take_the_output_rule() {
    let mut tensors = llama_7b(4096, F32);
    tensors.retain(|(n, _, _)| n != "output.weight");
    let model = ModelDesc::new("llama", 32, 32, 32);
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &Options::default());
    let te = target_of(&tensors, &c, "token_embd.weight");
    assert_eq!(
        (te.target, te.reason),
        (Q6_K, Reason::Rules(Category::TokenEmbd))
    );
    let c = choose(Mixture::Q8_0, &model, &tensors, &Options::default());
    assert_eq!(target_of(&tensors, &c, "token_embd.weight").target, Q8_0);
    // TQ mixtures would give an untied token_embd Q4_K; tied, Q6_K.
    let c = choose(Mixture::TQ1_0, &model, &tensors, &Options::default());
    assert_eq!(target_of(&tensors, &c, "token_embd.weight").target, Q6_K);
    // --output-tensor-type reaches a tied token_embd through the rules (and
    // then the fallback); --token-embedding-type wins over it.
    let opts = Options {
        output_tensor_type: Some(Q5_K),
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    assert_eq!(target_of(&tensors, &c, "token_embd.weight").target, Q5_K);
    let opts = Options {
        output_tensor_type: Some(Q5_K),
        token_embedding_type: Some(Q8_0),
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    let te = target_of(&tensors, &c, "token_embd.weight");
    assert_eq!((te.target, te.reason), (Q8_0, Reason::TokenEmbeddingType));
}

#[test]
fn output_and_embedding_types_are_taken_as_given() {
    let model = ModelDesc::new("llama", 1, 32, 32);
    let tensors: Model = vec![
        ("token_embd.weight".into(), vec![100, 4128], F32),
        ("output.weight".into(), vec![100, 4128], F32),
    ];
    let opts = Options {
        output_tensor_type: Some(Q4_K),
        token_embedding_type: Some(Q2_K),
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    // No shape fallback for these two, as in llama.cpp.
    assert_eq!(
        (c[0].target, c[0].reason),
        (Q2_K, Reason::TokenEmbeddingType)
    );
    assert_eq!((c[1].target, c[1].reason), (Q4_K, Reason::OutputTensorType));
    // Also under a float mixture.
    let c = choose(Mixture::F16, &model, &tensors, &opts);
    assert_eq!((c[0].target, c[1].target), (Q2_K, Q4_K));
}

#[test]
fn leave_output_tensor_keeps_it() {
    let tensors = llama_7b(4096, F16);
    let model = ModelDesc::new("llama", 32, 32, 32);
    let opts = Options {
        leave_output_tensor: true,
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    let out = target_of(&tensors, &c, "output.weight");
    assert_eq!(
        (out.target, out.reason),
        (F16, Reason::Kept(Exclusion::LeaveOutputTensor))
    );
    // output.weight still exists, so token_embd is not tied.
    assert_eq!(target_of(&tensors, &c, "token_embd.weight").target, Q4_K);
}

// -------------------------------------------------------------- exclusions

#[test]
fn tensors_llama_quantize_keeps() {
    let cases: &[(&str, &[usize], Option<Exclusion>)] = &[
        (
            "blk.0.attn_q.bias",
            &[4096],
            Some(Exclusion::FewerThanTwoDims),
        ),
        ("blk.0.attn_q.bias", &[64, 4096], Some(Exclusion::NotWeight)),
        (
            "rope_freqs.weight",
            &[64],
            Some(Exclusion::FewerThanTwoDims),
        ),
        (
            "blk.0.row.weight",
            &[1, 4096],
            Some(Exclusion::FewerThanTwoDims),
        ),
        (
            "blk.0.attn_q_norm.weight",
            &[128, 128],
            Some(Exclusion::Norm),
        ),
        (
            "blk.0.ffn_gate_inp.weight",
            &[8, 4096],
            Some(Exclusion::Name("ffn_gate_inp.weight")),
        ),
        (
            "position_embd.weight",
            &[512, 4096],
            Some(Exclusion::Name("position_embd.weight")),
        ),
        (
            "token_types.weight",
            &[2, 4096],
            Some(Exclusion::Name("token_types.weight")),
        ),
        (
            "v.position_embd.weight",
            &[512, 1024],
            Some(Exclusion::Name(".position_embd")),
        ),
        (
            "blk.0.ssm_conv1d.weight",
            &[4096, 4],
            Some(Exclusion::Name("ssm_conv1d")),
        ),
        (
            "blk.0.time_mix_w1.weight",
            &[64, 4096],
            Some(Exclusion::Name("time_mix_w1.weight")),
        ),
        (
            "blk.0.attn_rel_b.weight",
            &[32, 64],
            Some(Exclusion::Name("attn_rel_b.weight")),
        ),
        (
            "v.patch_embd.weight",
            &[1024, 588],
            Some(Exclusion::Name(".patch_embd")),
        ),
        (
            "blk.0.altup_proj.weight",
            &[4, 4],
            Some(Exclusion::Name("altup")),
        ),
        ("blk.0.ffn_up_exps.weight", &[8, 14336, 4096], None),
        // llama.cpp's `rfind("weight") == size() - 6` is true for every
        // 5-byte name: such a tensor is quantized.
        ("embed", &[32, 256], None),
        ("embe", &[32, 256], Some(Exclusion::NotWeight)),
    ];
    let model = ModelDesc::new("llama", 1, 32, 32);
    for &(name, shape, want) in cases {
        let tensors: Model = vec![(name.into(), shape.to_vec(), F32)];
        let c = choose(Mixture::Q4_0, &model, &tensors, &Options::default());
        match want {
            Some(why) => {
                assert_eq!(
                    (c[0].target, c[0].reason),
                    (F32, Reason::Kept(why)),
                    "{name}"
                );
            }
            None => assert_eq!(c[0].target, Q4_0, "{name} {shape:?}"),
        }
    }
}

// ------------------------------------------------ requantizing, conversions

#[test]
fn requantizing_needs_the_flag() {
    let model = ModelDesc::new("llama", 2, 32, 32);
    let tensors: Model = vec![
        ("blk.1.attn_q.weight".into(), vec![256, 256], Q4_0),
        ("blk.0.attn_q.weight".into(), vec![256, 256], Q8_0),
        ("blk.0.attn_norm.weight".into(), vec![256], F32),
    ];
    // The first in llama.cpp's order is blk.0.
    match choose_types(
        Mixture::Q4_K_M,
        &model,
        &descs(&tensors),
        &Options::default(),
    ) {
        Err(MixtureError::RequantizeDisabled { name, from, to }) => {
            assert_eq!(
                (name.as_str(), from, to),
                ("blk.0.attn_q.weight", Q8_0, Q4_K)
            );
        }
        other => panic!("{other:?}"),
    }
    let opts = Options {
        allow_requantize: true,
        ..Options::default()
    };
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &opts);
    assert_eq!((c[0].source, c[0].target), (Q4_0, Q4_K));
    assert!(c[0].converts());
    // A tensor already in its target type is copied, no flag needed.
    let same: Model = vec![("blk.0.attn_q.weight".into(), vec![256, 256], Q4_0)];
    let c = choose(Mixture::Q4_0, &model, &same, &Options::default());
    assert!(!c[0].converts());
    // Going to F16 from a quantized type is requantizing too.
    assert!(matches!(
        choose_types(Mixture::F16, &model, &descs(&same), &Options::default()),
        Err(MixtureError::RequantizeDisabled { .. })
    ));
    // F16/BF16 sources are fine; integer sources cannot be converted.
    for (src, ok) in [
        (F16, true),
        (BF16, true),
        (F32, true),
        (I32, false),
        (F64, false),
    ] {
        let t: Model = vec![("blk.0.attn_q.weight".into(), vec![256, 256], src)];
        let r = choose_types(Mixture::Q4_K_M, &model, &descs(&t), &Options::default());
        assert_eq!(r.is_ok(), ok, "{src}: {r:?}");
        if !ok {
            assert!(matches!(r, Err(MixtureError::CannotConvert { .. })));
        }
    }
}

#[test]
fn q2_k_s_needs_an_importance_matrix() {
    let tensors = llama_7b(4096, F32);
    let model = ModelDesc::new("llama", 32, 32, 32);
    match choose_types(
        Mixture::Q2_K_S,
        &model,
        &descs(&tensors),
        &Options::default(),
    ) {
        Err(MixtureError::ImatrixRequired { name, dtype }) => {
            // token_embd.weight is Q2_K but exempt; blk.0.attn_k is first.
            assert_eq!((name.as_str(), dtype), ("blk.0.attn_k.weight", Q2_K));
        }
        other => panic!("{other:?}"),
    }
    // An override to Q4_K for every blk tensor leaves no Q2_K to worry about.
    let opts = Options {
        overrides: vec![parse_override("blk=q4_k").unwrap()],
        ..Options::default()
    };
    let c = choose(Mixture::Q2_K_S, &model, &tensors, &opts);
    assert!(c.iter().all(|c| !c.requires_imatrix));
}

#[test]
fn duplicate_names_are_refused() {
    let tensors: Model = vec![
        ("a.weight".into(), vec![32, 32], F32),
        ("a.weight".into(), vec![32, 32], F32),
    ];
    let model = ModelDesc::new("llama", 1, 1, 1);
    assert!(matches!(
        choose_types(Mixture::Q4_0, &model, &descs(&tensors), &Options::default()),
        Err(MixtureError::DuplicateTensor { .. })
    ));
}

// ------------------------------------------ experts, Falcon, 70B, metadata

fn mixtral(n_layer: usize) -> Model {
    let mut m: Model = vec![("token_embd.weight".into(), vec![32000, 4096], F16)];
    for i in 0..n_layer {
        let t = |w: &str, s: &[usize]| (format!("blk.{i}.{w}"), s.to_vec(), F16);
        m.push(t("attn_q.weight", &[4096, 4096]));
        m.push(t("attn_k.weight", &[1024, 4096]));
        m.push(t("attn_v.weight", &[1024, 4096]));
        m.push(t("attn_output.weight", &[4096, 4096]));
        m.push(t("ffn_gate_inp.weight", &[8, 4096]));
        m.push(t("ffn_gate_exps.weight", &[8, 14336, 4096]));
        m.push(t("ffn_up_exps.weight", &[8, 14336, 4096]));
        m.push(t("ffn_down_exps.weight", &[8, 4096, 14336]));
    }
    m.push(("output.weight".into(), vec![32000, 4096], F16));
    m
}

#[test]
fn eight_experts() {
    let tensors = mixtral(32);
    let model = ModelDesc::new("llama", 32, 32, 8).with_experts(8);
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &Options::default());
    for (i, (name, _, _)) in tensors.iter().enumerate() {
        let layer: Option<u32> = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse().ok());
        let want = if name == "output.weight" {
            Q6_K
        } else if name.ends_with("attn_v.weight") || name.ends_with("attn_k.weight") {
            Q8_0
        } else if name.ends_with("attn_output.weight") {
            Q5_K
        } else if name.ends_with("ffn_gate_inp.weight") {
            F16 // kept
        } else if name.ends_with("ffn_down_exps.weight") {
            if MORE_BITS_32.contains(&layer.unwrap()) {
                Q6_K
            } else {
                Q4_K
            }
        } else {
            Q4_K // token_embd, attn_q, ffn_gate_exps, ffn_up_exps
        };
        assert_eq!(c[i].target, want, "{name}");
    }
    // With experts the layer comes from the name and must be in range.
    let mut bad = mixtral(2);
    bad.push(("ffn_down_exps.weight".into(), vec![8, 4096, 14336], F16));
    let small = ModelDesc::new("llama", 2, 32, 8).with_experts(8);
    assert!(matches!(
        choose_types(Mixture::Q4_K_M, &small, &descs(&bad), &Options::default()),
        Err(MixtureError::NoLayer { .. })
    ));
    let mut bad = mixtral(2);
    bad.push(("blk.2.ffn_up_exps.weight".into(), vec![8, 14336, 4096], F16));
    assert!(matches!(
        choose_types(Mixture::Q4_K_M, &small, &descs(&bad), &Options::default()),
        Err(MixtureError::BadLayer {
            layer: 2,
            n_layer: 2,
            ..
        })
    ));
}

#[test]
fn falcon_rules() {
    // Falcon: attn_qkv is attn_v-like; output always Q8_0.
    let mut tensors: Model = vec![("token_embd.weight".into(), vec![65024, 4544], F32)];
    for i in 0..32 {
        tensors.push((format!("blk.{i}.attn_qkv.weight"), vec![4672, 4544], F32));
        tensors.push((format!("blk.{i}.attn_output.weight"), vec![4544, 4544], F32));
        tensors.push((format!("blk.{i}.ffn_up.weight"), vec![18176, 4544], F32));
        tensors.push((format!("blk.{i}.ffn_down.weight"), vec![4544, 18176], F32));
    }
    tensors.push(("output.weight".into(), vec![65024, 4544], F32));
    let model = ModelDesc::new("falcon", 32, 71, 1);
    // 4544 = 17.75 * 256: K-quant rows fall back; use Q4_K_M and check the
    // rule's choice through fallback_from.
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &Options::default());
    let t = |n: &str| *target_of(&tensors, &c, n);
    assert_eq!(t("output.weight").target, Q8_0);
    // ffn_down: i < 2 -> Q6_K, use_more_bits -> Q5_K, else Q4_K (row 18176
    // = 71 * 256 fits).
    assert_eq!(t("blk.0.ffn_down.weight").target, Q6_K);
    assert_eq!(t("blk.2.ffn_down.weight").target, Q5_K);
    assert_eq!(t("blk.4.ffn_down.weight").target, Q4_K);
    assert_eq!(t("blk.6.ffn_down.weight").target, Q5_K);
    // attn_qkv: use_more_bits over the attn_v-like count -> Q6_K -> Q8_0.
    assert_eq!(t("blk.0.attn_qkv.weight").fallback_from, Some(Q6_K));
    assert_eq!(t("blk.4.attn_qkv.weight").fallback_from, Some(Q4_K));
    let c = choose(Mixture::Q3_K_L, &model, &tensors, &Options::default());
    let t = |n: &str| *target_of(&tensors, &c, n);
    assert_eq!(t("blk.9.ffn_down.weight").target, Q4_K);
    assert_eq!(t("blk.9.attn_output.weight").fallback_from, Some(Q4_K));
    let c = choose(Mixture::Q3_K_M, &model, &tensors, &Options::default());
    let t = |n: &str| *target_of(&tensors, &c, n);
    assert_eq!(t("blk.1.ffn_down.weight").target, Q5_K);
    assert_eq!(t("blk.6.ffn_down.weight").target, Q4_K);
    assert_eq!(t("blk.7.ffn_down.weight").target, Q3_K);
}

#[test]
fn seventy_b_gives_attn_v_more_bits() {
    let model = ModelDesc::new("llama", 80, 64, 8);
    assert!(model.is_70b);
    assert!(!ModelDesc::new("llama", 80, 64, 64).is_70b);
    assert!(!ModelDesc::new("qwen2", 80, 64, 8).is_70b);
    let tensors: Model = (0..80)
        .map(|i| (format!("blk.{i}.attn_v.weight"), vec![1024, 8192], F16))
        .collect();
    let c = choose(Mixture::Q4_K_M, &model, &tensors, &Options::default());
    // use_more_bits(i, 80): i < 10, i >= 70, (i - 10) % 3 == 2 -> Q6_K; the
    // rest would be Q4_K and become Q5_K.
    assert_eq!(c[0].target, Q6_K);
    assert_eq!(c[10].target, Q5_K);
    assert_eq!(c[12].target, Q6_K);
    assert_eq!(c[68].target, Q5_K);
    assert_eq!(c[69].target, Q6_K);
    let c = choose(Mixture::Q2_K, &model, &tensors, &Options::default());
    assert!(c.iter().all(|c| c.target == Q5_K));
    // Q3_K_S has no attn_v rule, but its default Q3_K is bumped too.
    let c = choose(Mixture::Q3_K_S, &model, &tensors, &Options::default());
    assert!(c.iter().all(|c| c.target == Q5_K));
}

#[test]
fn model_desc_from_metadata() {
    let mut md = Metadata::new();
    md.insert("general.architecture", "llama");
    md.insert("llama.block_count", 32u32);
    md.insert("llama.attention.head_count", 32u32);
    md.insert("llama.attention.head_count_kv", 8u32);
    let d = ModelDesc::from_metadata(&md).unwrap();
    assert_eq!(d, ModelDesc::new("llama", 32, 32, 8));
    assert_eq!(d.n_gqa(), 4);
    md.insert("llama.expert_count", 8u32);
    assert_eq!(ModelDesc::from_metadata(&md).unwrap().n_expert, 8);
    // head_count_kv defaults to head_count; per-layer arrays give layer 0.
    let mut md = Metadata::new();
    md.insert("general.architecture", "qwen2");
    md.insert("qwen2.block_count", 24u64);
    md.insert(
        "qwen2.attention.head_count",
        Value::Array(Array::U32(vec![14, 14])),
    );
    let d = ModelDesc::from_metadata(&md).unwrap();
    assert_eq!(
        (d.n_layer, d.n_head, d.n_head_kv, d.n_expert),
        (24, 14, 14, 0)
    );
    // Errors name the key.
    let mut md = Metadata::new();
    md.insert("general.architecture", "llama");
    let e = ModelDesc::from_metadata(&md).unwrap_err();
    assert!(e.to_string().contains("llama.block_count"), "{e}");
    md.insert("llama.block_count", -1i32);
    assert!(ModelDesc::from_metadata(&md).is_err());
    assert!(ModelDesc::from_metadata(&Metadata::new()).is_err());
}
