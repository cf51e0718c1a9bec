//! The fast slice of the fuzz targets (msh_fuzz): each target's seeds and a few hundred
//! deterministic mutations of them must end without a panic and in bounded time. The
//! coverage-guided runs of a million inputs per target are `fuzz/run.sh`.

use crate::common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Mutations per target in the suite; `MSH_FUZZ_INPUTS` raises it for a longer local run.
const DEFAULT_INPUTS: usize = 300;
const SLOWEST_INPUT: Duration = Duration::from_secs(5);

/// xorshift64*: the same inputs on every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four edits of `input`: bit flips, boundary bytes, insertions, deletions,
/// duplicated or spliced ranges, truncation, and digits turned into huge numbers.
fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\x00\xff\x7f\x80-9:\n{[,'\"#.e";
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        let last = out.len().saturating_sub(1);
        match rng.below(8) {
            0 if !out.is_empty() => out[at.min(last)] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at.min(last)] = SPECIAL[rng.below(SPECIAL.len())],
            2 => out.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            3 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let chunk = out[at.min(end)..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            6 => out.truncate(at),
            _ => {
                let huge: &[u8] = [&b"99999999999999999999"[..], b"4294967296", b"-1", b"1e308", b"NaN"][rng.below(5)];
                out.splice(at..at, huge.iter().copied());
            }
        }
    }
    out
}

#[test]
fn every_fuzz_target_survives_its_seeds_and_their_mutations() {
    let inputs: usize = std::env::var("MSH_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_INPUTS);
    let root = common::root();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for (name, target) in msh_fuzz::TARGETS {
        let seeds = msh_fuzz::seeds(name, &root);
        assert!(!seeds.is_empty(), "target {name} has no seeds");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..seeds.len() + inputs {
            let input = match seeds.get(i) {
                Some(seed) => seed.clone(),
                None => mutate(&seeds[rng.below(seeds.len())], &seeds[rng.below(seeds.len())], &mut rng),
            };
            let began = Instant::now();
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                let path = std::env::temp_dir().join(format!("msh-fuzz-{name}-{i}.bin"));
                std::fs::write(&path, &input).unwrap();
                failures.push(format!("{name}: input {i} panicked (saved to {})", path.display()));
                break;
            }
            slowest = slowest.max(began.elapsed());
        }
        eprintln!("{name}: {} inputs in {:.2?}, slowest {slowest:.2?}", seeds.len() + inputs, started.elapsed());
        if slowest > SLOWEST_INPUT {
            failures.push(format!("{name}: an input took {slowest:.2?}"));
        }
    }
    std::panic::set_hook(quiet);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
