//! ggml's k-quant scale searches run on eight groups at once, one group per
//! lane.
//!
//! llama.cpp's searches (`make_qkx2_quants`, `make_qx_quants`,
//! `make_q3_quants`, ...) are scalar loops over one group of 16 or 32 values:
//! that is why its k-quant quantizers run at 0.06-0.15 GB/s. Their
//! operations depend on the group only, so eight groups can be searched side
//! by side: lane `j` of every vector holds group `j`, and each lane performs
//! exactly the IEEE binary32 operations of the scalar search, in the same
//! order (no fused multiply-add, no reassociated sums). Branches become
//! per-lane selects; a lane whose scalar search would skip a step computes it
//! anyway and discards the result. The bytes are therefore the reference's,
//! at any vector width; the tests compare every search with its scalar twin
//! in [`crate::kquants`] on random and adversarial groups.
//!
//! The code is safe, portable Rust over `[f32; 8]` / `[i32; 8]` arrays: the
//! functions are `#[inline(always)]` so that the AVX2 instances of the block
//! quantizers (`#[target_feature(enable = "avx2")]` in [`crate::kquants`])
//! compile each array operation into one 256-bit instruction.

// Lane loops index like ggml's C, so each line can be checked against it.
#![allow(clippy::needless_range_loop)]

/// `L` f32 lanes (8 fill one AVX2 register; 16 give two independent chains).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Fx<const L: usize>(pub [f32; L]);

/// `L` i32 lanes (quant values, or masks of all ones / all zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ix<const L: usize>(pub [i32; L]);

/// Eight f32 lanes.
pub(crate) type F8 = Fx<8>;
/// Eight i32 lanes.
pub(crate) type I8 = Ix<8>;
/// Sixteen f32 lanes (two AVX2 registers: two independent dependency chains).
pub(crate) type F16 = Fx<16>;
/// Sixteen i32 lanes.
pub(crate) type I16 = Ix<16>;

macro_rules! map {
    ($t:ident, |$k:ident| $e:expr) => {{
        let mut out = [Default::default(); L];
        for $k in 0..L {
            out[$k] = $e;
        }
        $t(out)
    }};
}

impl<const L: usize> Fx<L> {
    #[inline(always)]
    pub(crate) fn splat(v: f32) -> Self {
        Self([v; L])
    }
    #[inline(always)]
    pub(crate) fn add(self, o: Self) -> Self {
        map!(Fx, |k| self.0[k] + o.0[k])
    }
    #[inline(always)]
    pub(crate) fn sub(self, o: Self) -> Self {
        map!(Fx, |k| self.0[k] - o.0[k])
    }
    #[inline(always)]
    pub(crate) fn mul(self, o: Self) -> Self {
        map!(Fx, |k| self.0[k] * o.0[k])
    }
    #[inline(always)]
    pub(crate) fn div(self, o: Self) -> Self {
        map!(Fx, |k| self.0[k] / o.0[k])
    }
    #[inline(always)]
    pub(crate) fn abs(self) -> Self {
        map!(Fx, |k| f32::from_bits(self.0[k].to_bits() & 0x7fff_ffff))
    }
    #[inline(always)]
    pub(crate) fn neg(self) -> Self {
        map!(Fx, |k| f32::from_bits(self.0[k].to_bits() ^ 0x8000_0000))
    }
    #[inline(always)]
    pub(crate) fn sqrt(self) -> Self {
        map!(Fx, |k| self.0[k].sqrt())
    }
    /// C's `a < b ? a : b` per lane.
    #[inline(always)]
    pub(crate) fn min_c(self, o: Self) -> Self {
        map!(Fx, |k| if self.0[k] < o.0[k] {
            self.0[k]
        } else {
            o.0[k]
        })
    }
    #[inline(always)]
    pub(crate) fn lt(self, o: Self) -> Ix<L> {
        map!(Ix, |k| -i32::from(self.0[k] < o.0[k]))
    }
    #[inline(always)]
    pub(crate) fn gt(self, o: Self) -> Ix<L> {
        map!(Ix, |k| -i32::from(self.0[k] > o.0[k]))
    }
    #[inline(always)]
    pub(crate) fn eq(self, o: Self) -> Ix<L> {
        map!(Ix, |k| -i32::from(self.0[k] == o.0[k]))
    }
    #[inline(always)]
    pub(crate) fn ne(self, o: Self) -> Ix<L> {
        map!(Ix, |k| -i32::from(self.0[k] != o.0[k]))
    }
    /// `m ? a : b` per lane, on the bits.
    #[inline(always)]
    pub(crate) fn select(m: Ix<L>, a: Self, b: Self) -> Self {
        map!(Fx, |k| f32::from_bits(
            (a.0[k].to_bits() & m.0[k] as u32) | (b.0[k].to_bits() & !(m.0[k] as u32))
        ))
    }
    /// ggml's `nearest_int`, with the same result outside its exact range.
    #[inline(always)]
    pub(crate) fn nearest_int(self) -> Ix<L> {
        map!(Ix, |k| ((self.0[k] + 12_582_912.0).to_bits() as i32
            & 0x007f_ffff)
            - 0x0040_0000)
    }
    #[inline(always)]
    pub(crate) fn load(x: &[f32]) -> Self {
        let mut out = [0.0; L];
        out.copy_from_slice(&x[..L]);
        Self(out)
    }
}

impl<const L: usize> Ix<L> {
    #[inline(always)]
    pub(crate) fn splat(v: i32) -> Self {
        Self([v; L])
    }
    #[inline(always)]
    pub(crate) fn add(self, o: Self) -> Self {
        map!(Ix, |k| self.0[k].wrapping_add(o.0[k]))
    }
    /// `MAX(lo, MIN(hi, l))`.
    #[inline(always)]
    pub(crate) fn clamp(self, lo: i32, hi: i32) -> Self {
        map!(Ix, |k| {
            let m = if hi < self.0[k] { hi } else { self.0[k] };
            if lo > m { lo } else { m }
        })
    }
    #[inline(always)]
    pub(crate) fn to_f32(self) -> Fx<L> {
        map!(Fx, |k| self.0[k] as f32)
    }
    #[inline(always)]
    pub(crate) fn and(self, o: Self) -> Self {
        map!(Ix, |k| self.0[k] & o.0[k])
    }
    #[inline(always)]
    pub(crate) fn or(self, o: Self) -> Self {
        map!(Ix, |k| self.0[k] | o.0[k])
    }
    #[inline(always)]
    pub(crate) fn not(self) -> Self {
        map!(Ix, |k| !self.0[k])
    }
    #[inline(always)]
    pub(crate) fn ne(self, o: Self) -> Self {
        map!(Ix, |k| -i32::from(self.0[k] != o.0[k]))
    }
    #[inline(always)]
    pub(crate) fn select(m: Self, a: Self, b: Self) -> Self {
        map!(Ix, |k| (a.0[k] & m.0[k]) | (b.0[k] & !m.0[k]))
    }
    #[inline(always)]
    pub(crate) fn any(self) -> bool {
        self.0.iter().fold(0, |a, &v| a | v) != 0
    }
}

/// Lane `j` of `out[i]` = `x[j * N + i]`: `L` consecutive groups of `N`,
/// one per lane.
#[inline(always)]
pub(crate) fn transpose_in<const N: usize, const L: usize>(x: &[f32], out: &mut [Fx<L>; N]) {
    for j in 0..L {
        let g = &x[j * N..j * N + N];
        for i in 0..N {
            out[i].0[j] = g[i];
        }
    }
}

/// The inverse of [`transpose_in`] for quants: `out[j * N + i]` = lane `j`
/// of `l[i]` (values already in the `u8`/`i8` range of the caller).
#[inline(always)]
pub(crate) fn transpose_out<const N: usize, const L: usize, T: Copy>(
    l: &[Ix<L>; N],
    out: &mut [T],
    conv: impl Fn(i32) -> T,
) {
    for j in 0..L {
        let g = &mut out[j * N..j * N + N];
        for i in 0..N {
            g[i] = conv(l[i].0[j]);
        }
    }
}

/// The groups of an importance path, transposed as [`transpose_in`]: the
/// values, ggml's weights `qw[k] * sqrt(sigma2 + x[k]^2)` and each group's
/// sum of weights (added from the first, as ggml's `sumw`).
#[inline(always)]
pub(crate) fn importance_in<const N: usize, const L: usize>(
    x: &[f32],
    qw: &[f32],
    sigma2: f32,
) -> ([Fx<L>; N], [Fx<L>; N], Fx<L>) {
    let mut xt = [Fx::<L>::splat(0.0); N];
    let mut w = [Fx::<L>::splat(0.0); N];
    transpose_in(x, &mut xt);
    transpose_in(qw, &mut w);
    let s2 = Fx::<L>::splat(sigma2);
    let mut sumw = Fx::<L>::splat(0.0);
    for k in 0..N {
        w[k] = w[k].mul(s2.add(xt[k].mul(xt[k])).sqrt());
        sumw = sumw.add(w[k]);
    }
    (xt, w, sumw)
}

/// `make_qkx2_quants` (`V3 = false`) or `make_qkx3_quants` (`V3 = true`)
/// on eight groups (see the scalar versions in [`crate::kquants`]): fills `l`
/// with quants in `0..=nmax` and returns `(scale, -min)` per lane.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn make_qkx_quants<const N: usize, const L: usize, const V3: bool>(
    nmax: i32,
    x: &[Fx<L>; N],
    w: &[Fx<L>; N],
    l: &mut [Ix<L>; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (Fx<L>, Fx<L>) {
    let zero = Fx::<L>::splat(0.0);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w.mul(x[0]);
    for i in 1..N {
        min = Fx::<L>::select(x[i].lt(min), x[i], min);
        max = Fx::<L>::select(x[i].gt(max), x[i], max);
        sum_w = sum_w.add(w[i]);
        sum_x = sum_x.add(w[i].mul(x[i]));
    }
    min = Fx::<L>::select(min.gt(zero), zero, min);
    // qkx2 gives up on `max == min`, qkx3 on `max <= min`.
    let flat = if V3 { max.gt(min).not() } else { max.eq(min) };
    let nmaxf = nmax as f32;
    let iscale = Fx::<L>::splat(nmaxf).div(max.sub(min));
    let mut scale = Fx::<L>::splat(1.0).div(iscale);
    let err = |d: Fx<L>| if use_mad { d.abs() } else { d.mul(d) };
    let mut best_error = zero;
    for i in 0..N {
        let li = iscale.mul(x[i].sub(min)).nearest_int().clamp(0, nmax);
        l[i] = li;
        let diff = scale.mul(li.to_f32()).add(min).sub(x[i]);
        best_error = best_error.add(w[i].mul(err(diff)));
    }
    if nstep >= 1 {
        let mut laux = [Ix::<L>::splat(0); N];
        for is in 0..=nstep {
            // `min` moves when a step wins, as in ggml.
            let iscale = Fx::<L>::splat(rmin + rdelta * is as f32 + nmaxf).div(max.sub(min));
            let mut sum_l = zero;
            let mut sum_l2 = zero;
            let mut sum_xl = zero;
            for i in 0..N {
                let v = iscale.mul(x[i].sub(min));
                let li = if V3 {
                    // `v > 0 ? nearest_int(MIN(v, nmax)) : 0`
                    let q = v.min_c(Fx::<L>::splat(nmaxf)).nearest_int();
                    Ix::<L>::select(v.gt(zero), q, Ix::<L>::splat(0))
                } else {
                    v.nearest_int().clamp(0, nmax)
                };
                laux[i] = li;
                let lf = li.to_f32();
                sum_l = sum_l.add(w[i].mul(lf));
                sum_l2 = sum_l2.add(w[i].mul(lf).mul(lf));
                sum_xl = sum_xl.add(w[i].mul(lf).mul(x[i]));
            }
            let d = sum_w.mul(sum_l2).sub(sum_l.mul(sum_l));
            let ok = d.gt(zero);
            if !ok.any() {
                continue;
            }
            let mut this_scale = sum_w.mul(sum_xl).sub(sum_x.mul(sum_l)).div(d);
            let mut this_min = sum_l2.mul(sum_x).sub(sum_l.mul(sum_xl)).div(d);
            let pos = this_min.gt(zero);
            this_min = Fx::<L>::select(pos, zero, this_min);
            this_scale = Fx::<L>::select(pos, sum_xl.div(sum_l2), this_scale);
            let mut cur_error = zero;
            for i in 0..N {
                let diff = this_scale.mul(laux[i].to_f32()).add(this_min).sub(x[i]);
                cur_error = cur_error.add(w[i].mul(err(diff)));
            }
            let better = ok.and(flat.not()).and(cur_error.lt(best_error));
            if better.any() {
                for i in 0..N {
                    l[i] = Ix::<L>::select(better, laux[i], l[i]);
                }
                best_error = Fx::<L>::select(better, cur_error, best_error);
                scale = Fx::<L>::select(better, this_scale, scale);
                min = Fx::<L>::select(better, this_min, min);
            }
        }
    }
    // A flat group (max == min) stores zeros: scale 0, min as clamped.
    for li in l.iter_mut() {
        *li = Ix::<L>::select(flat, Ix::<L>::splat(0), *li);
    }
    (Fx::<L>::select(flat, zero, scale), min.neg())
}

/// `make_qx_quants` with `rmse_type = 1` on eight groups: weights `w` (ggml's
/// `x*x` when the caller has no importance, or the importance weights), quants
/// stored biased by `nmax` in `l`; returns the scale per lane.
#[inline(always)]
pub(crate) fn make_qx_quants<const N: usize, const L: usize>(
    nmax: i32,
    x: &[Fx<L>; N],
    w: &[Fx<L>; N],
    l: &mut [Ix<L>; N],
) -> Fx<L> {
    let zero = Fx::<L>::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for i in 0..N {
        let ax = x[i].abs();
        let m = ax.gt(amax);
        amax = Fx::<L>::select(m, ax, amax);
        max = Fx::<L>::select(m, x[i], max);
    }
    let tiny = amax.lt(Fx::<L>::splat(super::kquants::GROUP_MAX_EPS));
    let nmaxf = nmax as f32;
    let iscale = Fx::<L>::splat(-nmax as f32).div(max);
    let mut sumlx = zero;
    let mut suml2 = zero;
    for i in 0..N {
        let li = iscale.mul(x[i]).nearest_int().clamp(-nmax, nmax - 1);
        l[i] = li;
        let lf = li.to_f32();
        sumlx = sumlx.add(w[i].mul(x[i]).mul(lf));
        suml2 = suml2.add(w[i].mul(lf).mul(lf));
    }
    let mut scale = Fx::<L>::select(suml2.ne(zero), sumlx.div(suml2), zero);
    let mut best = scale.mul(sumlx);
    let mut laux = [Ix::<L>::splat(0); N];
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = Fx::<L>::splat(-(nmaxf + 0.1f32 * is as f32)).div(max);
        let mut sumlx = zero;
        let mut suml2 = zero;
        for i in 0..N {
            let li = iscale.mul(x[i]).nearest_int().clamp(-nmax, nmax - 1);
            laux[i] = li;
            let lf = li.to_f32();
            sumlx = sumlx.add(w[i].mul(x[i]).mul(lf));
            suml2 = suml2.add(w[i].mul(lf).mul(lf));
        }
        let better = suml2.gt(zero).and(sumlx.mul(sumlx).gt(best.mul(suml2)));
        if better.any() {
            for i in 0..N {
                l[i] = Ix::<L>::select(better, laux[i], l[i]);
            }
            let s = sumlx.div(suml2);
            scale = Fx::<L>::select(better, s, scale);
            best = Fx::<L>::select(better, s.mul(sumlx), best);
        }
    }
    let bias = Ix::<L>::splat(nmax);
    for li in l.iter_mut() {
        *li = Ix::<L>::select(tiny, Ix::<L>::splat(0), li.add(bias));
    }
    Fx::<L>::select(tiny, zero, scale)
}

/// `make_q3_quants` with `do_rmse` on eight groups: quants stored biased by
/// `nmax` in `l`; returns the scale per lane.
#[inline(always)]
pub(crate) fn make_q3_quants<const N: usize, const L: usize>(
    nmax: i32,
    x: &[Fx<L>; N],
    l: &mut [Ix<L>; N],
) -> Fx<L> {
    let zero = Fx::<L>::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for i in 0..N {
        let ax = x[i].abs();
        let m = ax.gt(amax);
        amax = Fx::<L>::select(m, ax, amax);
        max = Fx::<L>::select(m, x[i], max);
    }
    let tiny = amax.lt(Fx::<L>::splat(super::kquants::GROUP_MAX_EPS));
    let iscale = Fx::<L>::splat(-nmax as f32).div(max);
    let mut sumlx = zero;
    let mut suml2 = zero;
    let mut w = [zero; N];
    for i in 0..N {
        let li = iscale.mul(x[i]).nearest_int().clamp(-nmax, nmax - 1);
        l[i] = li;
        w[i] = x[i].mul(x[i]);
        let lf = li.to_f32();
        sumlx = sumlx.add(w[i].mul(x[i]).mul(lf));
        suml2 = suml2.add(w[i].mul(lf).mul(lf));
    }
    // A lane whose pass changes nothing would change nothing in any later
    // pass (its state is the same), so running every lane until all have
    // settled (or five passes) equals ggml's per-group early exit.
    for _itry in 0..5 {
        let mut changed = Ix::<L>::splat(0);
        for i in 0..N {
            let li = l[i].to_f32();
            let slx = sumlx.sub(w[i].mul(x[i]).mul(li));
            let pos = slx.gt(zero);
            if !pos.any() {
                continue;
            }
            let sl2 = suml2.sub(w[i].mul(li).mul(li));
            let new_l = x[i].mul(sl2).div(slx).nearest_int().clamp(-nmax, nmax - 1);
            let differs = pos.and(new_l.ne(l[i]));
            let nl = new_l.to_f32();
            let slx = slx.add(w[i].mul(x[i]).mul(nl));
            let sl2 = sl2.add(w[i].mul(nl).mul(nl));
            let take = differs
                .and(sl2.gt(zero))
                .and(slx.mul(slx).mul(suml2).gt(sumlx.mul(sumlx).mul(sl2)));
            l[i] = Ix::<L>::select(take, new_l, l[i]);
            sumlx = Fx::<L>::select(take, slx, sumlx);
            suml2 = Fx::<L>::select(take, sl2, suml2);
            changed = changed.or(take);
        }
        if !changed.any() {
            break;
        }
    }
    let bias = Ix::<L>::splat(nmax);
    for li in l.iter_mut() {
        *li = Ix::<L>::select(tiny, Ix::<L>::splat(0), li.add(bias));
    }
    Fx::<L>::select(tiny.or(suml2.gt(zero).not()), zero, sumlx.div(suml2))
}

/// The final requantization of a sub-block against its stored scale:
/// `out[i] = clamp(nearest_int((x[i] + add) / d), lo, hi)` for `x.len()` a
/// multiple of 8 (`add` = 0 skips the addition, as ggml's Q3_K/Q6_K do).
#[inline(always)]
pub(crate) fn requantize<T: Copy>(
    x: &[f32],
    add: Option<f32>,
    d: f32,
    lo: i32,
    hi: i32,
    out: &mut [T],
    conv: impl Fn(i32) -> T,
) {
    let dv = F8::splat(d);
    for (xc, oc) in x.chunks_exact(8).zip(out.chunks_exact_mut(8)) {
        let mut v = F8::load(xc);
        if let Some(a) = add {
            v = v.add(F8::splat(a));
        }
        let q = v.div(dv).nearest_int().clamp(lo, hi);
        for k in 0..8 {
            oc[k] = conv(q.0[k]);
        }
    }
}
