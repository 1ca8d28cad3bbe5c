//! Weighted combination of several adapters into one: PEFT's
//! `LoraModel.add_weighted_adapter` (PEFT 0.21.2,
//! `tuners/lora/model.py` and `utils/merge_utils.py`).
//!
//! - `linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune` combine
//!   the factors themselves, separately for `lora_A` and `lora_B`: adapter
//!   `k`'s `A` gets the weight `sign(w_k s_k) sqrt(|w_k s_k|)` and its `B`
//!   `sqrt(|w_k s_k|)` (`s_k` its scaling for the module), then the method
//!   merges the weighted "task tensors". All adapters must have the same rank.
//! - `cat` stacks `A_k * w_k * s_k` along the rank and concatenates the `B_k`
//!   (rank = the sum of the ranks; modules missing from an adapter are
//!   zero-padded, as PEFT's pre-allocated factors are).
//! - `svd` (and `ties_svd`, `dare_linear_svd`, `dare_ties_svd`,
//!   `magnitude_prune_svd`) combine the full deltas `s_k B_k A_k` with the
//!   weights and truncate an SVD: `B = U_r diag(S_r)`, `A = V_r^T`, optionally
//!   clamped at the `svd_clamp` quantile of their values.
//!
//! The result's config is the first adapter's with `r = lora_alpha =` the new
//! rank, empty `rank_pattern`/`alpha_pattern` and the union of the
//! `target_modules` (sorted; PEFT keeps a set). As in PEFT, `use_rslora` is
//! kept, so an rsLoRA first adapter gives the result the scaling
//! `sqrt(r)`, not 1.
//!
//! Exactness: every step is PEFT's f32 arithmetic in PEFT's order, except the
//! SVD (f64 here, LAPACK f32 in torch) and the products `B_k A_k` (f64,
//! rounded once). **Random pruning** (`dare_*`) draws its Bernoulli masks from
//! weightkit-init's counter-based generator ([`weightkit_init::CounterRng`],
//! keyed by `seed` and the module, factor and adapter), not torch's
//! `torch.bernoulli`: the masks are reproducible for a seed on every
//! platform and thread count, but differ from PEFT's draws.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use weightkit_init::{CounterRng, Init, Rng};

use crate::adapter::{Adapter, AdapterConfig, KEY_PREFIX, LoraModule, OrderedMap, TargetModules};
use crate::error::LoraError;
use crate::linalg;

/// PEFT's `combination_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CombinationType {
    /// Weighted sum of the factors.
    Linear,
    /// Concatenation along the rank.
    Cat,
    /// Weighted sum of the deltas, truncated SVD.
    Svd,
    /// TIES (magnitude pruning, sign election, disjoint mean) on the factors.
    Ties,
    /// TIES on the deltas, then SVD.
    TiesSvd,
    /// DARE (random pruning, rescaled by `1/density`), weighted sum.
    DareLinear,
    /// DARE on the deltas, then SVD.
    DareLinearSvd,
    /// DARE pruning, then TIES' sign election and disjoint mean.
    DareTies,
    /// DARE-TIES on the deltas, then SVD.
    DareTiesSvd,
    /// Magnitude pruning, weighted sum.
    MagnitudePrune,
    /// Magnitude pruning on the deltas, then SVD.
    MagnitudePruneSvd,
}

const NAMES: [(CombinationType, &str); 11] = [
    (CombinationType::Linear, "linear"),
    (CombinationType::Cat, "cat"),
    (CombinationType::Svd, "svd"),
    (CombinationType::Ties, "ties"),
    (CombinationType::TiesSvd, "ties_svd"),
    (CombinationType::DareLinear, "dare_linear"),
    (CombinationType::DareLinearSvd, "dare_linear_svd"),
    (CombinationType::DareTies, "dare_ties"),
    (CombinationType::DareTiesSvd, "dare_ties_svd"),
    (CombinationType::MagnitudePrune, "magnitude_prune"),
    (CombinationType::MagnitudePruneSvd, "magnitude_prune_svd"),
];

impl CombinationType {
    /// PEFT's name (`"dare_ties"` ...).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("linear", |(_, n)| n)
    }

    /// Every type, in PEFT's documentation order.
    pub fn all() -> impl Iterator<Item = CombinationType> {
        NAMES.iter().map(|(c, _)| *c)
    }

    /// The task-tensor method and whether deltas go through an SVD.
    fn parts(self) -> (Option<Method>, bool) {
        use CombinationType as C;
        match self {
            C::Linear => (Some(Method::Linear), false),
            C::Cat => (None, false),
            C::Svd => (Some(Method::Linear), true),
            C::Ties => (Some(Method::Ties), false),
            C::TiesSvd => (Some(Method::Ties), true),
            C::DareLinear => (Some(Method::DareLinear), false),
            C::DareLinearSvd => (Some(Method::DareLinear), true),
            C::DareTies => (Some(Method::DareTies), false),
            C::DareTiesSvd => (Some(Method::DareTies), true),
            C::MagnitudePrune => (Some(Method::MagnitudePrune), false),
            C::MagnitudePruneSvd => (Some(Method::MagnitudePrune), true),
        }
    }

    fn needs_density(self) -> bool {
        matches!(
            self.parts().0,
            Some(Method::Ties | Method::DareLinear | Method::DareTies | Method::MagnitudePrune)
        )
    }
}

impl fmt::Display for CombinationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CombinationType {
    type Err = LoraError;
    fn from_str(s: &str) -> Result<Self, LoraError> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(c, _)| *c)
            .ok_or_else(|| LoraError::CombineArgument {
                name: "combination_type",
                message: format!(
                    "unknown {s:?} (one of {})",
                    NAMES.map(|(_, n)| n).join(", ")
                ),
            })
    }
}

/// PEFT's `majority_sign_method` for TIES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MajoritySignMethod {
    /// The sign of the sum of the (pruned) values.
    #[default]
    Total,
    /// The sign held by most (pruned, non-zero) values.
    Frequency,
}

impl FromStr for MajoritySignMethod {
    type Err = LoraError;
    fn from_str(s: &str) -> Result<Self, LoraError> {
        match s {
            "total" => Ok(Self::Total),
            "frequency" => Ok(Self::Frequency),
            _ => Err(LoraError::CombineArgument {
                name: "majority_sign_method",
                message: format!("unknown {s:?} (\"total\" or \"frequency\")"),
            }),
        }
    }
}

/// The arguments of `add_weighted_adapter` besides the adapters and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct CombineOptions {
    /// How to combine.
    pub combination_type: CombinationType,
    /// Fraction of values kept by pruning, in `(0, 1]` (required by the
    /// ties, dare and magnitude_prune families).
    pub density: Option<f64>,
    /// TIES' sign election.
    pub majority_sign_method: MajoritySignMethod,
    /// The rank of an SVD combination (default: the largest input rank).
    pub svd_rank: Option<usize>,
    /// Clamp SVD factors at this quantile (in `[0, 1]`) of their values.
    pub svd_clamp: Option<f64>,
    /// Seed of the DARE masks.
    pub seed: u64,
}

impl CombineOptions {
    /// `combination_type` with PEFT's defaults for the rest (seed 0).
    pub fn new(combination_type: CombinationType) -> Self {
        CombineOptions {
            combination_type,
            density: None,
            majority_sign_method: MajoritySignMethod::Total,
            svd_rank: None,
            svd_clamp: None,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Linear,
    Ties,
    DareLinear,
    DareTies,
    MagnitudePrune,
}

fn arg_err(name: &'static str, message: impl Into<String>) -> LoraError {
    LoraError::CombineArgument {
        name,
        message: message.into(),
    }
}

fn incompatible(module: &str, message: impl Into<String>) -> LoraError {
    LoraError::Incompatible {
        module: module.to_owned(),
        message: message.into(),
    }
}

/// The largest rank an adapter may use anywhere (PEFT: `r`, or the largest
/// of `r` and the `rank_pattern` values).
fn max_rank(config: &AdapterConfig) -> usize {
    config
        .rank_pattern
        .0
        .iter()
        .map(|(_, r)| *r)
        .fold(config.r, usize::max)
}

/// Combines `adapters` (each with its weight; negative weights subtract)
/// into a new adapter, as PEFT's `add_weighted_adapter`. See the module
/// docs for each method. With one adapter the method is `linear`, as in
/// PEFT.
///
/// Errors: no adapters; a density outside `(0, 1]` or missing where the
/// method needs one; an `svd_clamp` outside `[0, 1]`; adapters of different
/// ranks for the factor-wise methods ([`LoraError::CombineRanks`]); a module
/// whose shape, kind (embedding or not) or layout (`fan_in_fan_out`) differs
/// between adapters; an SVD rank of 0 or above `min(rows, cols)` of a
/// module; `target_modules` lists mixed with regexes; DoRA, `lora_bias` and
/// adapters that save base tensors (`modules_to_save`, trained biases),
/// which PEFT's combination does not carry over.
pub fn add_weighted_adapter(
    adapters: &[(&Adapter, f64)],
    options: &CombineOptions,
) -> Result<Adapter, LoraError> {
    let Some((first, _)) = adapters.first() else {
        return Err(LoraError::NoAdapters);
    };
    let kind = if adapters.len() == 1 {
        CombinationType::Linear
    } else {
        options.combination_type
    };
    let density = match options.density {
        Some(d) if !(d > 0.0 && d <= 1.0) => {
            return Err(arg_err("density", format!("{d} is outside (0, 1]")));
        }
        Some(d) => d,
        None if kind.needs_density() => {
            return Err(arg_err("density", format!("{kind} needs a density")));
        }
        None => 1.0,
    };
    if let Some(q) = options.svd_clamp
        && !(0.0..=1.0).contains(&q)
    {
        return Err(arg_err("svd_clamp", format!("{q} is outside [0, 1]")));
    }
    if options.svd_rank == Some(0) {
        return Err(arg_err("svd_rank", "must be positive"));
    }
    for (k, (a, w)) in adapters.iter().enumerate() {
        let c = a.config();
        if !w.is_finite() {
            return Err(arg_err("weights", format!("weight {k} is {w}")));
        }
        if c.use_dora {
            return Err(LoraError::Unsupported(format!(
                "combining DoRA adapters (adapter {k})"
            )));
        }
        if c.lora_bias {
            return Err(LoraError::Unsupported(format!(
                "combining lora_bias adapters (adapter {k})"
            )));
        }
        if let Some((name, _, _)) = a.saved_tensors().first() {
            return Err(LoraError::Unsupported(format!(
                "combining adapters that replace base tensors (adapter {k} saves `{name}`)"
            )));
        }
        if c.fan_in_fan_out != first.config().fan_in_fan_out {
            return Err(incompatible(
                "*",
                format!("adapter {k} has a different fan_in_fan_out"),
            ));
        }
    }
    let ranks: Vec<usize> = adapters.iter().map(|(a, _)| max_rank(a.config())).collect();
    let (method, svd) = kind.parts();
    let new_rank = if svd {
        options
            .svd_rank
            .unwrap_or_else(|| ranks.iter().copied().max().unwrap_or(1))
    } else if method.is_some() {
        if ranks.iter().any(|&r| r != ranks[0]) {
            return Err(LoraError::CombineRanks {
                method: kind.name(),
                module: "*".into(),
                ranks,
            });
        }
        ranks[0]
    } else {
        ranks.iter().sum()
    };
    let target_modules = union_targets(adapters)?;
    let mut config = first.config().clone();
    config.r = new_rank;
    config.lora_alpha = new_rank as f64;
    config.rank_pattern = OrderedMap::default();
    config.alpha_pattern = OrderedMap::default();
    config.target_modules = target_modules;

    // Every module any adapter adapts, with (adapter index, module).
    let mut modules: BTreeMap<&str, Vec<(usize, &LoraModule)>> = BTreeMap::new();
    for (k, (a, _)) in adapters.iter().enumerate() {
        for m in a.modules() {
            modules.entry(&m.module).or_default().push((k, m));
        }
    }
    let mut tensors = Vec::new();
    for (name, present) in modules {
        let (_, m0) = present[0];
        for (k, m) in &present {
            if (m.b_rows, m.a_cols) != (m0.b_rows, m0.a_cols) {
                return Err(incompatible(
                    name,
                    format!(
                        "adapter {k} has a delta of shape [{}, {}], adapter {} [{}, {}]",
                        m.b_rows, m.a_cols, present[0].0, m0.b_rows, m0.a_cols
                    ),
                ));
            }
            if m.embedding != m0.embedding {
                return Err(incompatible(
                    name,
                    "an embedding LoRA in one adapter and a linear LoRA in another",
                ));
            }
        }
        let (rows, cols) = (m0.b_rows, m0.a_cols);
        let weights: Vec<f64> = present.iter().map(|(k, _)| adapters[*k].1).collect();
        let (a, b) = match (method, svd) {
            (None, _) => cat(&present, &weights, new_rank),
            (Some(method), false) => {
                // PEFT would stack mismatched factors (an error) or save an
                // adapter whose shapes disagree with its `r`.
                if present.iter().any(|(_, m)| m.rank != new_rank) {
                    return Err(LoraError::CombineRanks {
                        method: kind.name(),
                        module: name.to_owned(),
                        ranks: present.iter().map(|(_, m)| m.rank).collect(),
                    });
                }
                factorwise(method, &present, &weights, density, options, name)
            }
            (Some(method), true) => {
                let max = rows.min(cols);
                if new_rank > max {
                    return Err(LoraError::RankRange {
                        module: name.to_owned(),
                        rank: new_rank,
                        max,
                    });
                }
                let deltas: Vec<Vec<f32>> = present
                    .iter()
                    .map(|(_, m)| {
                        let s = m.scaling as f32;
                        linalg::product(&m.b, &m.a, rows, m.rank, cols)
                            .into_iter()
                            .map(|x| (x as f32) * s)
                            .collect()
                    })
                    .collect();
                let w32: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
                let refs: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
                let delta = merge_tasks(
                    method,
                    &refs,
                    &w32,
                    density,
                    options,
                    &format!("{name}.delta"),
                );
                let wide: Vec<f64> = delta.iter().map(|&x| f64::from(x)).collect();
                let dec = linalg::svd(&wide, rows, cols, name)?;
                let (mut b, mut a) = linalg::factors(&dec, rows, cols, new_rank, false);
                if let Some(q) = options.svd_clamp {
                    clamp_factors(&mut b, &mut a, q);
                }
                (a, b)
            }
        };
        let (ka, kb) = if m0.embedding {
            ("lora_embedding_A", "lora_embedding_B")
        } else {
            ("lora_A.weight", "lora_B.weight")
        };
        tensors.push((format!("{KEY_PREFIX}{name}.{ka}"), vec![new_rank, cols], a));
        tensors.push((format!("{KEY_PREFIX}{name}.{kb}"), vec![rows, new_rank], b));
    }
    Adapter::from_tensors(config, tensors)
}

/// PEFT's new `target_modules`: the union of lists, or the regexes joined
/// as `(r1)|(r2)`.
fn union_targets(adapters: &[(&Adapter, f64)]) -> Result<Option<TargetModules>, LoraError> {
    let targets: Vec<Option<&TargetModules>> = adapters
        .iter()
        .map(|(a, _)| a.config().target_modules.as_ref())
        .collect();
    if targets
        .iter()
        .all(|t| matches!(t, Some(TargetModules::List(_))))
    {
        let mut all: Vec<String> = targets
            .iter()
            .flatten()
            .flat_map(|t| match t {
                TargetModules::List(l) => l.clone(),
                TargetModules::Regex(_) => Vec::new(),
            })
            .collect();
        all.sort();
        all.dedup();
        Ok(Some(TargetModules::List(all)))
    } else if targets
        .iter()
        .all(|t| matches!(t, Some(TargetModules::Regex(_))))
    {
        let joined = targets
            .iter()
            .flatten()
            .map(|t| match t {
                TargetModules::Regex(r) => format!("({r})"),
                TargetModules::List(_) => String::new(),
            })
            .collect::<Vec<_>>()
            .join("|");
        Ok(Some(TargetModules::Regex(joined)))
    } else if targets.iter().all(Option::is_none) {
        Ok(None)
    } else {
        Err(incompatible(
            "*",
            "target_modules mixes lists and regexes (or is missing in some adapters); \
             PEFT cannot combine those",
        ))
    }
}

/// `cat`: `A = [A_k * w_k * s_k]` stacked along the rank, `B = [B_k]` side
/// by side, zero-padded to `new_rank`. Returns `(A, B)`.
fn cat(present: &[(usize, &LoraModule)], weights: &[f64], new_rank: usize) -> (Vec<f32>, Vec<f32>) {
    let (rows, cols) = (present[0].1.b_rows, present[0].1.a_cols);
    let mut a = vec![0f32; new_rank * cols];
    let mut b = vec![0f32; rows * new_rank];
    let mut at = 0;
    for ((_, m), &w) in present.iter().zip(weights) {
        // PEFT: `lora_A * weight * scaling`, two f32 multiplications.
        let (w, s) = (w as f32, m.scaling as f32);
        for (dst, &x) in a[at * cols..(at + m.rank) * cols].iter_mut().zip(&m.a) {
            *dst = x * w * s;
        }
        for i in 0..rows {
            b[i * new_rank + at..i * new_rank + at + m.rank]
                .copy_from_slice(&m.b[i * m.rank..(i + 1) * m.rank]);
        }
        at += m.rank;
    }
    (a, b)
}

/// The factor-wise methods: `A` and `B` merged separately with
/// `sign * sqrt(|w s|)` and `sqrt(|w s|)`. Returns `(A, B)`.
fn factorwise(
    method: Method,
    present: &[(usize, &LoraModule)],
    weights: &[f64],
    density: f64,
    options: &CombineOptions,
    module: &str,
) -> (Vec<f32>, Vec<f32>) {
    let mut wa = Vec::new();
    let mut wb = Vec::new();
    for ((_, m), &w) in present.iter().zip(weights) {
        let ws = w * m.scaling;
        let root = ws.abs().sqrt();
        wa.push((if ws >= 0.0 { root } else { -root }) as f32);
        wb.push(root as f32);
    }
    let a: Vec<&[f32]> = present.iter().map(|(_, m)| m.a.as_slice()).collect();
    let b: Vec<&[f32]> = present.iter().map(|(_, m)| m.b.as_slice()).collect();
    (
        merge_tasks(
            method,
            &a,
            &wa,
            density,
            options,
            &format!("{module}.lora_A"),
        ),
        merge_tasks(
            method,
            &b,
            &wb,
            density,
            options,
            &format!("{module}.lora_B"),
        ),
    )
}

/// `utils/merge_utils.py`: prune each task tensor as the method says, then
/// a weighted sum (linear, dare_linear, magnitude_prune) or TIES' sign
/// election and disjoint mean (ties, dare_ties). `label` names the tensor
/// for the DARE masks.
fn merge_tasks(
    method: Method,
    tasks: &[&[f32]],
    weights: &[f32],
    density: f64,
    options: &CombineOptions,
    label: &str,
) -> Vec<f32> {
    let pruned: Vec<Vec<f32>> = tasks
        .iter()
        .enumerate()
        .map(|(k, t)| match method {
            Method::Linear => t.to_vec(),
            Method::Ties | Method::MagnitudePrune => magnitude_prune(t, density),
            Method::DareLinear | Method::DareTies => {
                random_prune(t, density, options.seed, &format!("{label}/{k}"))
            }
        })
        .collect();
    let n = tasks.first().map_or(0, |t| t.len());
    match method {
        Method::Linear | Method::DareLinear | Method::MagnitudePrune => {
            let mut out = vec![0f32; n];
            for (t, &w) in pruned.iter().zip(weights) {
                for (o, &x) in out.iter_mut().zip(t) {
                    *o += x * w;
                }
            }
            out
        }
        Method::Ties | Method::DareTies => {
            let mask = majority_sign_mask(&pruned, options.majority_sign_method);
            let mut out = vec![0f32; n];
            let mut count = vec![0u32; n];
            for ((t, &w), keep) in pruned.iter().zip(weights).zip(&mask) {
                for (i, &x) in t.iter().enumerate() {
                    if keep[i] {
                        out[i] += x * w;
                        count[i] += 1;
                    }
                }
            }
            for (o, &c) in out.iter_mut().zip(&count) {
                *o /= c.max(1) as f32;
            }
            out
        }
    }
}

/// `calculate_majority_sign_mask`: per position, whether each task's sign
/// equals the elected sign (`+1` when the sum, or the sum of signs, is
/// `>= 0`). Zeros (pruned values) have sign 0 and never match.
fn majority_sign_mask(tasks: &[Vec<f32>], method: MajoritySignMethod) -> Vec<Vec<bool>> {
    let n = tasks.first().map_or(0, Vec::len);
    let sign = |x: f32| -> f32 {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let mut total = vec![0f32; n];
    for t in tasks {
        for (s, &x) in total.iter_mut().zip(t) {
            *s += match method {
                MajoritySignMethod::Total => x,
                MajoritySignMethod::Frequency => sign(x),
            };
        }
    }
    tasks
        .iter()
        .map(|t| {
            t.iter()
                .zip(&total)
                .map(|(&x, &s)| sign(x) == if s >= 0.0 { 1.0 } else { -1.0 })
                .collect()
        })
        .collect()
}

/// `magnitude_based_pruning`: keeps the `int(density * numel)` values of
/// largest magnitude (ties broken towards the lower index), zeroes the rest.
/// `density >= 1` keeps everything, as PEFT's `prune`.
pub fn magnitude_prune(tensor: &[f32], density: f64) -> Vec<f32> {
    if density >= 1.0 {
        return tensor.to_vec();
    }
    // Python's int(density * numel): truncation of the f64 product.
    let k = ((density * tensor.len() as f64) as usize).min(tensor.len());
    let mut out = vec![0f32; tensor.len()];
    if k == 0 {
        return out;
    }
    let mut idx: Vec<usize> = (0..tensor.len()).collect();
    let by_magnitude =
        |&i: &usize, &j: &usize| tensor[j].abs().total_cmp(&tensor[i].abs()).then(i.cmp(&j));
    idx.select_nth_unstable_by(k - 1, by_magnitude);
    for &i in &idx[..k] {
        out[i] = tensor[i];
    }
    out
}

/// `random_pruning` with `rescale=True`: each value kept with probability
/// `density` (a uniform draw `u < density` from [`CounterRng`] keyed by
/// `seed` and `label`, one draw per element index), then divided by
/// `density`. `density >= 1` keeps everything unscaled, as PEFT's `prune`.
pub fn random_prune(tensor: &[f32], density: f64, seed: u64, label: &str) -> Vec<f32> {
    if density >= 1.0 {
        return tensor.to_vec();
    }
    let mut u = vec![0f32; tensor.len()];
    let mut rng = Rng::from(CounterRng::new(seed).derive(label));
    let uniform = Init::Uniform { a: 0.0, b: 1.0 };
    // The shape is the buffer's own length, so this cannot fail.
    if uniform.fill(&mut rng, &[tensor.len()], &mut u).is_err() {
        return vec![0f32; tensor.len()];
    }
    let d = density as f32;
    tensor
        .iter()
        .zip(&u)
        .map(|(&x, &u)| if f64::from(u) < density { x / d } else { 0.0 })
        .collect()
}

/// PEFT's `svd_clamp`: the `q` quantile of all values of both factors
/// (`torch.quantile`, linear interpolation), then every value clamped to
/// `[-hi, hi]`.
pub fn clamp_factors(b: &mut [f32], a: &mut [f32], q: f64) {
    let mut dist: Vec<f32> = b.iter().chain(a.iter()).copied().collect();
    if dist.is_empty() {
        return;
    }
    dist.sort_by(f32::total_cmp);
    // torch: q becomes an f32 tensor, its rank `q * (n - 1)` is taken in
    // f64, the interpolation weight is rounded to f32 (checked against
    // torch 2.15's results in the fixtures).
    let rank = f64::from(q as f32) * (dist.len() - 1) as f64;
    let below = rank.floor();
    let weight = (rank - below) as f32;
    let lo = dist[(below as usize).min(dist.len() - 1)];
    let hi = dist[(rank.ceil() as usize).min(dist.len() - 1)];
    // torch's lerp.
    let hi_val = if weight < 0.5 {
        lo + weight * (hi - lo)
    } else {
        hi - (hi - lo) * (1.0 - weight)
    };
    let low_val = -hi_val;
    for x in b.iter_mut().chain(a.iter_mut()) {
        *x = x.max(low_val).min(hi_val);
    }
}
