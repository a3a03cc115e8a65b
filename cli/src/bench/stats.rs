//! The statistics of `mote bench`: numbers in, numbers out, no I/O.
//!
//! A benchmark runs a guest many times, and each run reports many timing samples (TSC cycles,
//! as `f64`). Samples inside one run share that run's VM, placement and cache state, so they are
//! not independent of one another: the run is the unit. Whatever infers beyond one run
//! ([`bootstrap_median_ci`], [`compare`]) therefore takes its input as one `Vec` of samples per
//! run and resamples or permutes whole runs, never single samples.
//!
//! Every percentile here, medians and quartiles included, is the one [`percentile`] defines
//! (linear interpolation between closest ranks: NumPy's default, R's type 7), and everything
//! random comes from a [`fastrand::Rng`] seeded by the caller, so the same input and seed give
//! the same result (with the same `fastrand` version).
//!
//! Values are expected to be finite. Where a result needs more (no values at all, or a positive
//! baseline for a ratio), the function returns `None` instead of a NaN or a panic; the functions
//! panic only on parameters outside their documented ranges, which is a mistake of the caller's.

use fastrand::Rng;

/// The `p`-th percentile (`p` from 0 to 100) of `sorted`, which must be sorted in ascending
/// order; `None` if it is empty.
///
/// The method is linear interpolation between closest ranks (NumPy's default `linear`, R's
/// `quantile` type 7, what criterion.rs uses): with `n` values `x[0] <= ... <= x[n-1]`, the rank
/// is `h = (n - 1) * p / 100`, and the percentile is `x[floor(h)] + (h - floor(h)) *
/// (x[floor(h) + 1] - x[floor(h)])` (just `x[n-1]` when `h = n - 1`).
///
/// # Panics
///
/// If `p` is not within `0..=100` (or is NaN).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    assert!(
        (0.0..=100.0).contains(&p),
        "percentile {p} is not within 0..=100"
    );
    debug_assert!(
        sorted.is_sorted_by(|a, b| a.total_cmp(b).is_le()),
        "percentile of unsorted values"
    );
    let last = sorted.len().checked_sub(1)?;
    let rank = p / 100.0 * last as f64;
    // `rank` is never negative, and `as` saturates; `min` keeps rounding from passing the end.
    let below = (rank.floor() as usize).min(last);
    if below == last {
        return Some(sorted[last]);
    }
    Some(interpolate(
        sorted[below],
        sorted[below + 1],
        rank - below as f64,
    ))
}

/// `low + fraction * (high - low)`: the one interpolation every percentile and median here uses,
/// so that a median found by selection equals the 50th [`percentile`] to the bit.
fn interpolate(low: f64, high: f64, fraction: f64) -> f64 {
    low + fraction * (high - low)
}

/// `values` sorted in ascending order (by `f64::total_cmp`), as a new `Vec`.
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    sorted
}

/// The median of `values` (the 50th [`percentile`]), found by selection, which reorders
/// `values`. `values` must not be empty.
fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, &mut middle, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return middle;
    }
    // Even: the rank is n/2 - 1/2, halfway between the largest value below the middle one and it.
    let low = below
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .unwrap_or(middle);
    interpolate(low, middle, 0.5)
}

/// The summary statistics of one set of values (one run's samples, or the samples of many).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many values there are (at least 1).
    pub count: usize,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The median: the 50th [`percentile`].
    pub median: f64,
    /// The 90th [`percentile`].
    pub p90: f64,
    /// The 99th [`percentile`].
    pub p99: f64,
    /// The sample standard deviation, `sqrt(sum((x - mean)^2) / (n - 1))`; 0 for one value.
    pub std_dev: f64,
}

impl Summary {
    /// The summary of `values`, in any order; `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let sorted = sorted(values);
        let count = sorted.len();
        let median = percentile(&sorted, 50.0)?;
        let mean = sorted.iter().sum::<f64>() / count as f64;
        // Two passes (the mean first), which loses less precision than a running sum of squares.
        let std_dev = if count == 1 {
            0.0
        } else {
            let squares: f64 = sorted.iter().map(|x| (x - mean) * (x - mean)).sum();
            (squares / (count - 1) as f64).sqrt()
        };
        Some(Summary {
            count,
            min: sorted[0],
            max: sorted[count - 1],
            mean,
            median,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            std_dev,
        })
    }

    /// The coefficient of variation, `std_dev / |mean|`: the spread relative to the size of the
    /// values (0.01 is 1 %). 0 when the standard deviation is 0 (all values equal, even all 0);
    /// infinite when the mean is 0 but the values differ.
    pub fn coefficient_of_variation(&self) -> f64 {
        if self.std_dev == 0.0 {
            0.0
        } else {
            self.std_dev / self.mean.abs()
        }
    }
}

/// Tukey's four fences: a value below `low_severe` or above `high_severe` is a severe outlier,
/// else a value below `low_mild` or above `high_mild` a mild one. A value exactly on a fence is
/// inside it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fences {
    /// `Q1 - 3 IQR`.
    pub low_severe: f64,
    /// `Q1 - 1.5 IQR`.
    pub low_mild: f64,
    /// `Q3 + 1.5 IQR`.
    pub high_mild: f64,
    /// `Q3 + 3 IQR`.
    pub high_severe: f64,
}

/// The outliers of a set of values by Tukey's fences, classified as criterion.rs does.
///
/// The quartiles `Q1` and `Q3` are the 25th and 75th [`percentile`]s and `IQR = Q3 - Q1`; the
/// [`Fences`] lie 1.5 IQR (mild) and 3 IQR (severe) outside the quartiles. Each value counts
/// once, in the most severe class it falls in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outliers {
    /// The first quartile, the 25th [`percentile`].
    pub q1: f64,
    /// The third quartile, the 75th [`percentile`].
    pub q3: f64,
    /// The interquartile range, `q3 - q1`.
    pub iqr: f64,
    /// The fences the values were classified by.
    pub fences: Fences,
    /// How many values lie below `fences.low_severe`.
    pub low_severe: usize,
    /// How many values lie below `fences.low_mild` but not below `fences.low_severe`.
    pub low_mild: usize,
    /// How many values lie above `fences.high_mild` but not above `fences.high_severe`.
    pub high_mild: usize,
    /// How many values lie above `fences.high_severe`.
    pub high_severe: usize,
}

impl Outliers {
    /// The outliers of `values`, in any order; `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Outliers> {
        let sorted = sorted(values);
        let q1 = percentile(&sorted, 25.0)?;
        let q3 = percentile(&sorted, 75.0)?;
        let iqr = q3 - q1;
        let fences = Fences {
            low_severe: q1 - 3.0 * iqr,
            low_mild: q1 - 1.5 * iqr,
            high_mild: q3 + 1.5 * iqr,
            high_severe: q3 + 3.0 * iqr,
        };
        let mut outliers = Outliers {
            q1,
            q3,
            iqr,
            fences,
            low_severe: 0,
            low_mild: 0,
            high_mild: 0,
            high_severe: 0,
        };
        for &x in &sorted {
            if x < fences.low_severe {
                outliers.low_severe += 1;
            } else if x > fences.high_severe {
                outliers.high_severe += 1;
            } else if x < fences.low_mild {
                outliers.low_mild += 1;
            } else if x > fences.high_mild {
                outliers.high_mild += 1;
            }
        }
        Some(outliers)
    }

    /// How many outliers there are, of all four classes.
    pub fn total(&self) -> usize {
        self.low_severe + self.low_mild + self.high_mild + self.high_severe
    }
}

/// A confidence interval: `lower <= upper`, at the given confidence level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The lower bound.
    pub lower: f64,
    /// The upper bound.
    pub upper: f64,
    /// The confidence level, between 0 and 1 (0.95 for a 95 % interval).
    pub confidence: f64,
}

impl Interval {
    /// `upper - lower`.
    #[cfg(test)]
    pub fn width(&self) -> f64 {
        self.upper - self.lower
    }

    /// Whether `value` lies within the interval, bounds included.
    #[cfg(test)]
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }

    /// The percentile interval of a bootstrap distribution: its `(1 - confidence) / 2` and
    /// `(1 + confidence) / 2` quantiles. `estimates` must not be empty; it is sorted here.
    fn of_bootstrap(estimates: &mut [f64], confidence: f64) -> Interval {
        estimates.sort_unstable_by(f64::total_cmp);
        let tail = (1.0 - confidence) / 2.0 * 100.0;
        Interval {
            lower: percentile(estimates, tail).expect("bootstrap estimates"),
            upper: percentile(estimates, 100.0 - tail).expect("bootstrap estimates"),
            confidence,
        }
    }
}

/// Checks the parameters of a bootstrap.
fn check_bootstrap(confidence: f64, resamples: usize) {
    assert!(
        confidence > 0.0 && confidence < 1.0,
        "confidence {confidence} is not strictly between 0 and 1"
    );
    assert!(resamples > 0, "a bootstrap needs at least one resample");
}

/// A confidence interval for the median of all samples, by a cluster bootstrap over runs.
///
/// `runs` holds each run's samples; runs without samples are left out. Each of `resamples`
/// resamples draws as many runs as there are, uniformly with replacement, pools all their
/// samples and takes the median of the pool; the interval is the percentile interval of those
/// medians, their `(1 - confidence) / 2` and `(1 + confidence) / 2` [`percentile`]s. Resampling
/// whole runs keeps the dependence between a run's samples, which resampling single samples
/// would hide (an interval far too narrow). One run, or runs of equal values, give an interval
/// of zero width. The same `runs` and `seed` give the same interval. `None` if there is no
/// sample at all.
///
/// Each resample copies and selects over all samples, so the cost is `resamples` times the
/// number of samples.
///
/// # Panics
///
/// If `confidence` is not strictly between 0 and 1, or `resamples` is 0.
pub fn bootstrap_median_ci(
    runs: &[Vec<f64>],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    check_bootstrap(confidence, resamples);
    let runs: Vec<&[f64]> = runs
        .iter()
        .filter(|run| !run.is_empty())
        .map(Vec::as_slice)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let mut rng = Rng::with_seed(seed);
    let mut pool = Vec::new();
    let mut medians = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        pool.clear();
        for _ in 0..runs.len() {
            pool.extend_from_slice(runs[rng.usize(..runs.len())]);
        }
        medians.push(median_in_place(&mut pool));
    }
    Some(Interval::of_bootstrap(&mut medians, confidence))
}

/// What a [`Comparison`] concludes about B against the baseline A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// B takes fewer cycles than A, beyond the noise threshold.
    Faster,
    /// B takes more cycles than A, beyond the noise threshold.
    Slower,
    /// No change shown: not significant, or not beyond the noise threshold.
    NoChange,
}

/// The parameters of [`compare`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompareOptions {
    /// The confidence level of the ratio's interval, strictly between 0 and 1 (default 0.95).
    pub confidence: f64,
    /// The p-value at or above which a difference is not significant, within `0..=1`
    /// (default 0.05).
    pub significance: f64,
    /// The relative change a difference must exceed to count, as a fraction, at least 0
    /// (default 0.02, 2 %).
    pub noise_threshold: f64,
    /// How many bootstrap resamples, and at most how many permutations, to draw (default
    /// 10,000); at least 1.
    pub resamples: usize,
    /// The seed of the random draws; the same inputs and seed give the same comparison.
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            confidence: 0.95,
            significance: 0.05,
            noise_threshold: 0.02,
            resamples: 10_000,
            // Any fixed value: reports are reproducible unless a seed is asked for.
            seed: 0x6d6f_7465,
        }
    }
}

/// The comparison of B against the baseline A, on the medians of their runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The median of A's run medians.
    pub baseline_median: f64,
    /// The median of B's run medians.
    pub candidate_median: f64,
    /// `candidate_median / baseline_median`: above 1 when B takes more cycles.
    pub ratio: f64,
    /// The bootstrap confidence interval of `ratio`.
    pub ratio_interval: Interval,
    /// The relative change, `ratio - 1` (0.05 is 5 % more cycles).
    pub change: f64,
    /// The two-sided p-value of the permutation test: how likely a difference of the groups'
    /// medians at least this large is if both groups' runs came from the same distribution.
    /// Never 0.
    pub p_value: f64,
    /// What the comparison concludes.
    pub verdict: Verdict,
}

impl Comparison {
    /// The confidence interval of `change`: that of `ratio`, less 1.
    pub fn change_interval(&self) -> Interval {
        Interval {
            lower: self.ratio_interval.lower - 1.0,
            upper: self.ratio_interval.upper - 1.0,
            confidence: self.ratio_interval.confidence,
        }
    }
}

/// Compares B (`b_runs`) against the baseline A (`a_runs`), each given as one `Vec` of samples
/// per run.
///
/// Each run is reduced to its median, and the groups to the median of their run medians; the
/// `ratio` is B's over A's. Its confidence interval is a bootstrap: each of
/// `options.resamples` resamples draws each group's run medians anew, uniformly with
/// replacement and independently of the other group, and takes the ratio of the two medians;
/// the interval is the percentile interval of those ratios. The p-value is a two-sided
/// permutation test of the rank-sum (Mann-Whitney) statistic over the run medians: the run
/// medians are ranked together (ties share their mean rank), the statistic is
/// `|mean rank of B - mean rank of A|`, and every way of splitting
/// the pooled run medians into groups of the original sizes when there are at most
/// `options.resamples` ways (then p is the share of splits whose difference is at least the
/// observed one, which is among them), else `options.resamples` random splits with p =
/// (1 + those at least as large) / (1 + `options.resamples`). So p is never 0, and with very few
/// runs it cannot be small (2 runs against 2: at least 1/3).
///
/// The verdict is criterion.rs's rule: [`Verdict::NoChange`] if `p_value >=
/// options.significance`; else [`Verdict::Slower`] if the whole interval of the change lies
/// above `+noise_threshold`, [`Verdict::Faster`] if it lies below `-noise_threshold`, and
/// [`Verdict::NoChange`] if it reaches into `-noise_threshold..=noise_threshold`.
///
/// Runs without samples are left out. `None` if a group has no run with samples, or a run's
/// median is not a positive finite number (a ratio of cycle counts needs positive counts).
///
/// # Panics
///
/// If `options.confidence` is not strictly between 0 and 1, `options.significance` is not within
/// `0..=1`, `options.noise_threshold` is negative or NaN, or `options.resamples` is 0.
pub fn compare(
    a_runs: &[Vec<f64>],
    b_runs: &[Vec<f64>],
    options: CompareOptions,
) -> Option<Comparison> {
    check_bootstrap(options.confidence, options.resamples);
    assert!(
        (0.0..=1.0).contains(&options.significance),
        "significance {} is not within 0..=1",
        options.significance
    );
    assert!(
        options.noise_threshold >= 0.0,
        "noise threshold {} is not at least 0",
        options.noise_threshold
    );
    let a = run_medians(a_runs)?;
    let b = run_medians(b_runs)?;
    let baseline_median = median_in_place(&mut a.clone());
    let candidate_median = median_in_place(&mut b.clone());
    let ratio = candidate_median / baseline_median;

    let mut rng = Rng::with_seed(options.seed);
    let mut ratios = Vec::with_capacity(options.resamples);
    let (mut a_draw, mut b_draw) = (Vec::with_capacity(a.len()), Vec::with_capacity(b.len()));
    for _ in 0..options.resamples {
        a_draw.clear();
        a_draw.extend((0..a.len()).map(|_| a[rng.usize(..a.len())]));
        b_draw.clear();
        b_draw.extend((0..b.len()).map(|_| b[rng.usize(..b.len())]));
        ratios.push(median_in_place(&mut b_draw) / median_in_place(&mut a_draw));
    }
    let ratio_interval = Interval::of_bootstrap(&mut ratios, options.confidence);
    let p_value = permutation_p_value(&a, &b, options.resamples, &mut rng);

    let mut comparison = Comparison {
        baseline_median,
        candidate_median,
        ratio,
        ratio_interval,
        change: ratio - 1.0,
        p_value,
        verdict: Verdict::NoChange,
    };
    comparison.verdict = verdict(
        p_value,
        comparison.change_interval(),
        options.significance,
        options.noise_threshold,
    );
    Some(comparison)
}

/// The median of each run with samples; `None` if there is none, or a median is not a positive
/// finite number.
fn run_medians(runs: &[Vec<f64>]) -> Option<Vec<f64>> {
    let medians: Vec<f64> = runs
        .iter()
        .filter(|run| !run.is_empty())
        .map(|run| median_in_place(&mut run.clone()))
        .collect();
    let positive = medians.iter().all(|m| m.is_finite() && *m > 0.0);
    (!medians.is_empty() && positive).then_some(medians)
}

/// criterion.rs's rule: a change counts only if it is significant and its whole confidence
/// interval lies beyond the noise threshold on one side.
fn verdict(p_value: f64, change: Interval, significance: f64, noise_threshold: f64) -> Verdict {
    if p_value >= significance {
        Verdict::NoChange
    } else if change.lower > noise_threshold {
        Verdict::Slower
    } else if change.upper < -noise_threshold {
        Verdict::Faster
    } else {
        Verdict::NoChange
    }
}

/// The two-sided permutation p-value of the rank-sum statistic `|mean rank(b) - mean rank(a)|`
/// (see [`compare`]): exact over all splits when there are at most `permutations`, else from
/// `permutations` random ones with the add-one correction. `a` and `b` must not be empty.
///
/// Ranks rather than the difference of the groups' medians: a median ignores how far a split is
/// from the observed one (with every run of A at one value and every run of B at another, a
/// split that moves four runs across keeps both medians, so such a difference would find half
/// the splits as extreme as two groups that do not overlap at all).
fn permutation_p_value(a: &[f64], b: &[f64], permutations: usize, rng: &mut Rng) -> f64 {
    let statistic = |a: &mut [f64], b: &mut [f64]| (mean(b) - mean(a)).abs();
    let pooled_values: Vec<f64> = a.iter().chain(b).copied().collect();
    let pooled = mid_ranks(&pooled_values);
    let observed = statistic(
        &mut pooled[..a.len()].to_vec(),
        &mut pooled[a.len()..].to_vec(),
    );
    // A split as extreme as the observed one may compute a few ulps apart from it.
    let threshold = observed - observed * 1e-12;
    let (n, k) = (pooled.len(), a.len());
    let (mut a_split, mut b_split) = (Vec::with_capacity(k), Vec::with_capacity(n - k));

    if let Some(splits) = binomial_at_most(n, k, permutations) {
        // Every split, in lexicographic order of the indices that go to A.
        let mut in_a: Vec<usize> = (0..k).collect();
        let mut extreme = 0usize;
        loop {
            a_split.clear();
            b_split.clear();
            let mut next = in_a.iter().peekable();
            for (i, &x) in pooled.iter().enumerate() {
                if next.next_if_eq(&&i).is_some() {
                    a_split.push(x);
                } else {
                    b_split.push(x);
                }
            }
            if statistic(&mut a_split, &mut b_split) >= threshold {
                extreme += 1;
            }
            // The next combination: raise the last index that can still rise, reset those after.
            let Some(i) = (0..k).rev().find(|&i| in_a[i] < n - k + i) else {
                break;
            };
            in_a[i] += 1;
            for j in i + 1..k {
                in_a[j] = in_a[j - 1] + 1;
            }
        }
        return extreme as f64 / splits as f64;
    }

    let mut shuffled = pooled;
    let mut extreme = 0usize;
    for _ in 0..permutations {
        rng.shuffle(&mut shuffled);
        a_split.clear();
        a_split.extend_from_slice(&shuffled[..k]);
        b_split.clear();
        b_split.extend_from_slice(&shuffled[k..]);
        if statistic(&mut a_split, &mut b_split) >= threshold {
            extreme += 1;
        }
    }
    (1 + extreme) as f64 / (1 + permutations) as f64
}

/// The arithmetic mean; 0 for no values.
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The rank of each value among `values`, from 1, with tied values sharing the mean of the
/// ranks they span.
fn mid_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start + 1 ..= end; their mean is (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = rank;
        }
        start = end;
    }
    ranks
}

/// `n choose k` if it is at most `limit`, else `None`.
fn binomial_at_most(n: usize, k: usize, limit: usize) -> Option<usize> {
    let k = k.min(n - k);
    let mut choose: u128 = 1;
    for i in 0..k {
        // C(n, i + 1) = C(n, i) * (n - i) / (i + 1), exactly; it grows with i up to n / 2.
        choose = choose * (n - i) as u128 / (i + 1) as u128;
        if choose > limit as u128 {
            return None;
        }
    }
    Some(choose as usize)
}

/// The bandwidth [`kde`] uses for `values`; `None` if there are none.
///
/// Silverman's rule of thumb, as criterion.rs applies it: `h = s * (4 / (3 n))^(1/5)`, with `s`
/// the sample standard deviation and `n` the number of values (the rule is optimal for normally
/// distributed values). When the values do not spread (`s = 0`, as for one value), `h` is 0.1 %
/// of their magnitude, or 0.001 if they are all 0: a narrow peak at the one value.
pub fn kde_bandwidth(values: &[f64]) -> Option<f64> {
    let summary = Summary::of(values)?;
    if summary.std_dev > 0.0 {
        let n = summary.count as f64;
        Some(summary.std_dev * (4.0 / (3.0 * n)).powf(0.2))
    } else if summary.mean != 0.0 {
        Some(summary.mean.abs() * 1e-3)
    } else {
        Some(1e-3)
    }
}

/// A kernel density estimate of `values`, for plots: `points` pairs `(x, density)`.
///
/// The estimate at `x` is `sum(phi((x - x_i) / h)) / (n h)`, with `phi` the standard normal
/// density and `h` the bandwidth [`kde_bandwidth`] gives. The `x` lie evenly spaced from `min -
/// 3h` to `max + 3h`, both included (one point lies in the middle), so the curve integrates to
/// nearly 1 over them. Empty if there are no values or `points` is 0.
pub fn kde(values: &[f64], points: usize) -> Vec<(f64, f64)> {
    let Some(h) = kde_bandwidth(values) else {
        return Vec::new();
    };
    if points == 0 {
        return Vec::new();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (start, end) = (min - 3.0 * h, max + 3.0 * h);
    let scale = 1.0 / (values.len() as f64 * h * (2.0 * std::f64::consts::PI).sqrt());
    let density = |x: f64| {
        let sum: f64 = values
            .iter()
            .map(|xi| {
                let u = (x - xi) / h;
                (-0.5 * u * u).exp()
            })
            .sum();
        sum * scale
    };
    if points == 1 {
        let middle = (start + end) / 2.0;
        return vec![(middle, density(middle))];
    }
    let step = (end - start) / (points - 1) as f64;
    (0..points)
        .map(|i| {
            let x = if i == points - 1 {
                end
            } else {
                start + step * i as f64
            };
            (x, density(x))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts `actual` is within `1e-9` of `expected`, relative to the larger.
    #[track_caller]
    fn close(actual: f64, expected: f64) {
        let tolerance = 1e-9 * actual.abs().max(expected.abs()).max(1.0);
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not {expected}"
        );
    }

    /// `runs` runs of `samples` samples each around `center`: each run's level lies uniformly
    /// within `±run_spread` (a fraction) of `center`, and each sample within `±sample_spread` of
    /// its run's level. Samples of one run are thus correlated, as a VM run's are.
    fn noisy_runs(
        rng: &mut Rng,
        runs: usize,
        samples: usize,
        center: f64,
        run_spread: f64,
        sample_spread: f64,
    ) -> Vec<Vec<f64>> {
        let mut around = |x: f64, spread: f64| x * (1.0 + spread * (2.0 * rng.f64() - 1.0));
        (0..runs)
            .map(|_| {
                let level = around(center, run_spread);
                (0..samples).map(|_| around(level, sample_spread)).collect()
            })
            .collect()
    }

    fn scaled(runs: &[Vec<f64>], factor: f64) -> Vec<Vec<f64>> {
        runs.iter()
            .map(|run| run.iter().map(|x| x * factor).collect())
            .collect()
    }

    #[test]
    fn percentile_interpolates_between_closest_ranks() {
        let x = [10.0, 20.0, 30.0, 40.0];
        // n = 4, so the rank is h = 3 p / 100.
        assert_eq!(percentile(&x, 0.0), Some(10.0)); // h = 0
        assert_eq!(percentile(&x, 100.0), Some(40.0)); // h = 3, the last
        close(percentile(&x, 25.0).unwrap(), 17.5); // h = 0.75: 10 + 0.75 * 10
        close(percentile(&x, 50.0).unwrap(), 25.0); // h = 1.5: 20 + 0.5 * 10
        close(percentile(&x, 62.5).unwrap(), 28.75); // h = 1.875: 20 + 0.875 * 10
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    #[should_panic(expected = "not within 0..=100")]
    fn percentile_refuses_a_fraction_above_100() {
        percentile(&[1.0], 100.5);
    }

    #[test]
    fn median_by_selection_is_the_50th_percentile() {
        let mut rng = Rng::with_seed(1);
        for n in 1..40 {
            let values: Vec<f64> = (0..n).map(|_| rng.f64() * 1e6).collect();
            let expected = percentile(&sorted(&values), 50.0).unwrap();
            assert_eq!(
                median_in_place(&mut values.clone()).to_bits(),
                expected.to_bits()
            );
        }
    }

    #[test]
    fn summary_of_one_to_ten_unsorted() {
        let s = Summary::of(&[7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]).unwrap();
        // Sorted: x[0..10] = 1..=10, n = 10, so the rank of p is h = 9 p / 100.
        assert_eq!(s.count, 10);
        assert_eq!((s.min, s.max), (1.0, 10.0));
        close(s.mean, 5.5); // 55 / 10
        close(s.median, 5.5); // h = 4.5: x[4] + 0.5 (x[5] - x[4]) = 5 + 0.5
        close(s.p90, 9.1); // h = 8.1: x[8] + 0.1 (x[9] - x[8]) = 9 + 0.1
        close(s.p99, 9.91); // h = 8.91: 9 + 0.91
        // Squared deviations from 5.5: 2 (4.5² + 3.5² + 2.5² + 1.5² + 0.5²) = 2 (20.25 + 12.25
        // + 6.25 + 2.25 + 0.25) = 82.5; over n - 1 = 9: 9.1666..., whose root is 3.02765035...
        close(s.std_dev, (82.5f64 / 9.0).sqrt());
        close(s.std_dev, 3.027_650_354_097_491_7);
        close(s.coefficient_of_variation(), 3.027_650_354_097_491_7 / 5.5);
    }

    #[test]
    fn summary_of_one_value_and_of_none() {
        let s = Summary::of(&[42.0]).unwrap();
        assert_eq!(s.count, 1);
        for v in [s.min, s.max, s.mean, s.median, s.p90, s.p99] {
            assert_eq!(v, 42.0);
        }
        assert_eq!(s.std_dev, 0.0);
        assert_eq!(s.coefficient_of_variation(), 0.0);
        assert_eq!(Summary::of(&[]), None);
        // Equal zeros: no spread, and no 0 / 0.
        assert_eq!(
            Summary::of(&[0.0, 0.0]).unwrap().coefficient_of_variation(),
            0.0
        );
    }

    #[test]
    fn summary_of_two_values() {
        let s = Summary::of(&[3.0, 1.0]).unwrap();
        close(s.median, 2.0); // h = 0.5
        close(s.p90, 2.8); // h = 0.9: 1 + 0.9 * 2
        // Deviations ±1: (1 + 1) / (2 - 1) = 2.
        close(s.std_dev, 2f64.sqrt());
    }

    #[test]
    fn outliers_on_both_sides_mild_and_severe() {
        // Sorted, 16 values: -20, -5, 10, 11, ..., 21, 35, 60. Rank of p: h = 15 p / 100.
        // Q1: h = 3.75, x[3] + 0.75 (x[4] - x[3]) = 11 + 0.75 = 11.75.
        // Q3: h = 11.25, x[11] + 0.25 (x[12] - x[11]) = 19 + 0.25 = 19.25. IQR = 7.5.
        // Fences: 11.75 - 22.5 = -10.75, 11.75 - 11.25 = 0.5, 19.25 + 11.25 = 30.5,
        // 19.25 + 22.5 = 41.75. So -20 is low severe, -5 low mild, 35 high mild, 60 high severe.
        let mut values: Vec<f64> = (10..=21).map(f64::from).collect();
        values.extend([60.0, -5.0, 35.0, -20.0]);
        let o = Outliers::of(&values).unwrap();
        close(o.q1, 11.75);
        close(o.q3, 19.25);
        close(o.iqr, 7.5);
        close(o.fences.low_severe, -10.75);
        close(o.fences.low_mild, 0.5);
        close(o.fences.high_mild, 30.5);
        close(o.fences.high_severe, 41.75);
        assert_eq!(
            (o.low_severe, o.low_mild, o.high_mild, o.high_severe),
            (1, 1, 1, 1)
        );
        assert_eq!(o.total(), 4);
    }

    #[test]
    fn a_value_on_a_fence_is_no_outlier() {
        // Sorted, 7 values: h = 6 p / 100. Q1: h = 1.5, between 2 and 2: 2. Q3: h = 4.5, between
        // 4 and 4: 4. IQR 2, mild fences 2 - 3 = -1 and 4 + 3 = 7: -1 and 7 lie on them.
        let o = Outliers::of(&[7.0, 2.0, 4.0, -1.0, 3.0, 4.0, 2.0]).unwrap();
        assert_eq!((o.fences.low_mild, o.fences.high_mild), (-1.0, 7.0));
        assert_eq!(o.total(), 0);
        assert_eq!(Outliers::of(&[]), None);
        // No spread: the fences all coincide with the value, which is inside them.
        assert_eq!(Outliers::of(&[5.0; 4]).unwrap().total(), 0);
    }

    #[test]
    fn bootstrap_ci_contains_the_true_median_of_a_tight_sample() {
        // Symmetric about 1000, so the population's median is 1000.
        let runs = noisy_runs(&mut Rng::with_seed(7), 20, 50, 1000.0, 0.005, 0.01);
        let ci = bootstrap_median_ci(&runs, 0.95, 2000, 1).unwrap();
        assert!(ci.contains(1000.0), "{ci:?}");
        assert!(ci.width() > 0.0 && ci.width() < 10.0, "{ci:?}");
        assert_eq!(ci.confidence, 0.95);
    }

    #[test]
    fn bootstrap_ci_resamples_runs_not_samples() {
        // Two runs far apart, each of many equal samples: only whole-run resampling sees that a
        // third of resamples pool two copies of one run. Resampling samples would give a
        // median near 150 almost always, a narrow interval; here it spans both runs.
        let runs = vec![vec![100.0; 50], vec![200.0; 50]];
        let ci = bootstrap_median_ci(&runs, 0.95, 1000, 3).unwrap();
        assert_eq!((ci.lower, ci.upper), (100.0, 200.0));
    }

    #[test]
    fn bootstrap_ci_of_equal_runs_or_one_run_has_zero_width() {
        let equal = vec![vec![5.0, 9.0, 7.0]; 8];
        let ci = bootstrap_median_ci(&equal, 0.95, 500, 1).unwrap();
        assert_eq!((ci.lower, ci.upper), (7.0, 7.0));

        let constant = vec![vec![3.0; 4]; 5];
        let ci = bootstrap_median_ci(&constant, 0.99, 500, 1).unwrap();
        assert_eq!((ci.lower, ci.upper), (3.0, 3.0));

        // One run: every resample is that run, whose median is 2.5.
        let ci = bootstrap_median_ci(&[vec![1.0, 100.0, 2.0, 3.0]], 0.95, 500, 1).unwrap();
        assert_eq!((ci.lower, ci.upper), (2.5, 2.5));

        // One run among empty ones, and one resample.
        let ci = bootstrap_median_ci(&[vec![], vec![4.0], vec![]], 0.95, 1, 1).unwrap();
        assert_eq!((ci.lower, ci.upper), (4.0, 4.0));

        assert_eq!(bootstrap_median_ci(&[], 0.95, 10, 1), None);
        assert_eq!(bootstrap_median_ci(&[vec![]], 0.95, 10, 1), None);
    }

    #[test]
    fn bootstrap_ci_is_deterministic_for_a_seed() {
        let runs = noisy_runs(&mut Rng::with_seed(11), 10, 20, 1000.0, 0.05, 0.02);
        let first = bootstrap_median_ci(&runs, 0.95, 500, 42).unwrap();
        assert_eq!(bootstrap_median_ci(&runs, 0.95, 500, 42).unwrap(), first);
        assert_ne!(bootstrap_median_ci(&runs, 0.95, 500, 43).unwrap(), first);
    }

    #[test]
    #[should_panic(expected = "strictly between 0 and 1")]
    fn bootstrap_refuses_a_confidence_of_1() {
        bootstrap_median_ci(&[vec![1.0]], 1.0, 10, 1);
    }

    #[test]
    fn twice_the_cycles_is_slower() {
        let a = noisy_runs(&mut Rng::with_seed(5), 30, 40, 10_000.0, 0.05, 0.03);
        let b = scaled(&a, 2.0);
        let c = compare(&a, &b, CompareOptions::default()).unwrap();
        // Doubling is exact in binary, so are the medians of the doubled values.
        assert_eq!(c.ratio, 2.0);
        assert_eq!(c.change, 1.0);
        assert!(c.ratio_interval.contains(2.0), "{c:?}");
        assert!(!c.ratio_interval.contains(1.0), "{c:?}");
        assert!(c.ratio_interval.width() > 0.0, "{c:?}");
        assert!(c.p_value < 0.05 && c.p_value > 0.0, "{c:?}");
        // 30 against 30 runs: too many splits, so 10,000 random ones; none is as extreme as
        // the observed split when every B run is slower than every A run.
        assert_eq!(c.p_value, 1.0 / 10_001.0);
        assert_eq!(c.verdict, Verdict::Slower);
        assert_eq!(c.change_interval().lower, c.ratio_interval.lower - 1.0);

        let c = compare(&b, &a, CompareOptions::default()).unwrap();
        assert_eq!(c.ratio, 0.5);
        assert_eq!(c.verdict, Verdict::Faster);
    }

    #[test]
    fn the_same_runs_are_no_change() {
        let a = noisy_runs(&mut Rng::with_seed(6), 20, 40, 10_000.0, 0.05, 0.03);
        let c = compare(&a, &a, CompareOptions::default()).unwrap();
        assert_eq!(c.ratio, 1.0);
        assert!(c.ratio_interval.contains(1.0), "{c:?}");
        // Every split's difference is at least 0, the observed one.
        assert_eq!(c.p_value, 1.0);
        assert_eq!(c.verdict, Verdict::NoChange);
    }

    #[test]
    fn one_percent_with_little_noise_is_within_the_noise_threshold() {
        let a = noisy_runs(&mut Rng::with_seed(8), 20, 40, 10_000.0, 0.001, 0.001);
        let b = scaled(&a, 1.01);
        let c = compare(&a, &b, CompareOptions::default()).unwrap();
        // Significant, but the whole interval lies within ±2 %: the threshold decides.
        assert!(c.p_value < 0.05, "{c:?}");
        let change = c.change_interval();
        assert!(change.lower > 0.0 && change.upper < 0.02, "{c:?}");
        assert_eq!(c.verdict, Verdict::NoChange);
        // With a threshold below the change, the same comparison says slower.
        let strict = CompareOptions {
            noise_threshold: 0.005,
            ..CompareOptions::default()
        };
        assert_eq!(compare(&a, &b, strict).unwrap().verdict, Verdict::Slower);
    }

    #[test]
    fn same_distribution_rarely_differs() {
        // 200 pairs of groups drawn from one distribution, with runs that differ more (±5 %)
        // than the noise threshold. At a significance of 0.05 about 10 of 200 should come out
        // significant; allow up to 20, and as many changes called, with the default threshold
        // and with none. (Measured with these seeds: 10 significant, 0 and 5 changes. Treating
        // every sample as a run of its own, 33 of 50 such pairs came out significant.)
        let options = CompareOptions {
            resamples: 500,
            ..CompareOptions::default()
        };
        let (mut significant, mut changed, mut changed_without_threshold) = (0, 0, 0);
        for trial in 0..200 {
            let mut rng = Rng::with_seed(1000 + trial);
            let a = noisy_runs(&mut rng, 10, 20, 10_000.0, 0.05, 0.02);
            let b = noisy_runs(&mut rng, 10, 20, 10_000.0, 0.05, 0.02);
            let c = compare(
                &a,
                &b,
                CompareOptions {
                    seed: trial,
                    ..options
                },
            )
            .unwrap();
            significant += usize::from(c.p_value < options.significance);
            changed += usize::from(c.verdict != Verdict::NoChange);
            // The same with no noise threshold: significance and the interval's side decide.
            let without_threshold = verdict(c.p_value, c.change_interval(), 0.05, 0.0);
            changed_without_threshold += usize::from(without_threshold != Verdict::NoChange);
        }
        assert!(significant <= 20, "{significant} of 200 significant");
        assert!(changed <= 20, "{changed} of 200 called a change");
        assert!(
            changed_without_threshold <= 20,
            "{changed_without_threshold} of 200 called a change without a noise threshold"
        );
    }

    #[test]
    fn groups_that_do_not_overlap_are_significant_however_tied() {
        // Every run of A at one value and every run of B at another, as cycle counts of a
        // steady loop are: of the C(20, 10) = 184,756 splits only the observed one and its
        // mirror image separate the groups completely, so p = 2 / 184,756 (drawn: about
        // 1 / 10,001). A difference of medians would count every split that leaves six or more
        // of A's runs together as just as extreme.
        let a = vec![vec![28_132.0; 20]; 10];
        let b = vec![vec![56_238.0; 20]; 10];
        let c = compare(&a, &b, CompareOptions::default()).unwrap();
        assert!(c.p_value < 0.001, "{}", c.p_value);
        assert_eq!(c.verdict, Verdict::Slower);
        let tied = compare(&a, &a, CompareOptions::default()).unwrap();
        assert_eq!(tied.verdict, Verdict::NoChange);
        close(tied.p_value, 1.0);
    }

    #[test]
    fn ranks_share_their_mean_when_tied() {
        assert_eq!(mid_ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(mid_ranks(&[5.0, 5.0, 5.0]), [2.0, 2.0, 2.0]);
        assert_eq!(mid_ranks(&[]), Vec::<f64>::new());
    }

    #[test]
    fn small_groups_enumerate_every_split() {
        // One sample per run: A's run medians 1, 2, 3 and B's 4, 5, 6, which are also their
        // ranks; observed |mean rank 5 - mean rank 2| = 3. Of the C(6, 3) = 20 splits, only
        // {1, 2, 3} against {4, 5, 6} and its mirror image reach 3: p = 2 / 20.
        let a = [vec![2.0], vec![1.0], vec![3.0]];
        let b = [vec![5.0], vec![6.0], vec![4.0]];
        let c = compare(&a, &b, CompareOptions::default()).unwrap();
        close(c.p_value, 0.1);
        assert_eq!(c.verdict, Verdict::NoChange);
        close(c.ratio, 2.5);

        // One run each: the two splits are mirror images, p = 1, and the interval is a point.
        let c = compare(
            &[vec![1.0, 2.0]],
            &[vec![8.0, 9.0]],
            CompareOptions::default(),
        )
        .unwrap();
        assert_eq!(c.p_value, 1.0);
        close(c.ratio, 8.5 / 1.5);
        assert_eq!(c.ratio_interval.lower, c.ratio);
        assert_eq!(c.ratio_interval.upper, c.ratio);
        assert_eq!(c.verdict, Verdict::NoChange);
    }

    #[test]
    fn binomial_stops_past_the_limit() {
        assert_eq!(binomial_at_most(6, 3, 10_000), Some(20));
        assert_eq!(binomial_at_most(20, 10, 200_000), Some(184_756));
        assert_eq!(binomial_at_most(20, 10, 184_755), None);
        assert_eq!(binomial_at_most(60, 30, 10_000), None);
        assert_eq!(binomial_at_most(2, 1, 1), None);
    }

    #[test]
    fn compare_is_deterministic_and_refuses_what_has_no_ratio() {
        let a = noisy_runs(&mut Rng::with_seed(9), 12, 10, 1000.0, 0.05, 0.02);
        let b = noisy_runs(&mut Rng::with_seed(10), 12, 10, 1030.0, 0.05, 0.02);
        let options = CompareOptions {
            resamples: 500,
            ..CompareOptions::default()
        };
        let first = compare(&a, &b, options).unwrap();
        assert_eq!(compare(&a, &b, options).unwrap(), first);
        let other = compare(&a, &b, CompareOptions { seed: 1, ..options }).unwrap();
        assert_ne!(other.ratio_interval, first.ratio_interval);

        assert_eq!(compare(&[], &b, options), None);
        assert_eq!(compare(&a, &[vec![]], options), None);
        assert_eq!(compare(&[vec![0.0]], &b, options), None);
    }

    #[test]
    fn the_verdict_needs_significance_and_the_whole_interval_past_the_threshold() {
        let interval = |lower, upper| Interval {
            lower,
            upper,
            confidence: 0.95,
        };
        let decide = |p, lower, upper| verdict(p, interval(lower, upper), 0.05, 0.02);
        assert_eq!(decide(0.01, 0.03, 0.10), Verdict::Slower);
        assert_eq!(decide(0.01, -0.10, -0.03), Verdict::Faster);
        // Not significant, however large.
        assert_eq!(decide(0.05, 0.50, 0.60), Verdict::NoChange);
        // Within the threshold, or reaching into it.
        assert_eq!(decide(0.01, -0.01, 0.01), Verdict::NoChange);
        assert_eq!(decide(0.01, 0.01, 0.10), Verdict::NoChange);
        assert_eq!(decide(0.01, -0.10, -0.01), Verdict::NoChange);
        assert_eq!(decide(0.01, 0.02, 0.10), Verdict::NoChange);
    }

    /// The trapezoid rule over `curve`'s points.
    fn integral(curve: &[(f64, f64)]) -> f64 {
        curve
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum()
    }

    #[test]
    fn kde_integrates_to_one_and_peaks_at_the_mode() {
        // 80 values about 100 and 20 about 200: the mode is near 100.
        let mut rng = Rng::with_seed(12);
        let mut values: Vec<f64> = (0..80).map(|_| 100.0 + 10.0 * (rng.f64() - 0.5)).collect();
        values.extend((0..20).map(|_| 200.0 + 10.0 * (rng.f64() - 0.5)));
        let curve = kde(&values, 512);
        assert_eq!(curve.len(), 512);
        let h = kde_bandwidth(&values).unwrap();
        close(
            curve[0].0,
            values.iter().copied().fold(f64::MAX, f64::min) - 3.0 * h,
        );
        close(
            curve[511].0,
            values.iter().copied().fold(f64::MIN, f64::max) + 3.0 * h,
        );
        let area = integral(&curve);
        assert!((area - 1.0).abs() < 0.01, "area {area}");
        let peak = curve
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!((peak.0 - 100.0).abs() < 10.0, "peak at {peak:?}");
    }

    #[test]
    fn kde_bandwidth_is_silvermans() {
        // s = 3.0276503540974917 (as in summary_of_one_to_ten_unsorted), n = 10:
        // h = s (4 / 30)^(1/5) = 2.023454610490181.
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        close(kde_bandwidth(&values).unwrap(), 2.023_454_610_490_181);
    }

    #[test]
    fn kde_of_values_that_do_not_spread() {
        for values in [vec![1000.0; 5], vec![0.0], vec![-3.0, -3.0]] {
            let curve = kde(&values, 301);
            assert!(curve.iter().all(|(x, y)| x.is_finite() && y.is_finite()));
            let area = integral(&curve);
            assert!((area - 1.0).abs() < 0.01, "{values:?}: area {area}");
            // The middle point is the value itself, where the peak is.
            let peak = curve
                .iter()
                .copied()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            assert_eq!(peak, curve[150]);
            close(peak.0, values[0]);
        }
        assert!(kde(&[], 10).is_empty());
        assert!(kde(&[1.0, 2.0], 0).is_empty());
        let one = kde(&[1.0, 3.0], 1);
        assert_eq!(one.len(), 1);
        close(one[0].0, 2.0);
    }
}
