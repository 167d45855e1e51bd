//! Deterministic mutations of seed inputs, for the stable replay test: a small seeded
//! PRNG (xorshift64*) and libFuzzer's simplest mutations (bit flips, interesting
//! bytes and integers, truncation, erasing, duplicating and splicing chunks,
//! dictionary tokens). Not a fuzzer: it gives CI a smoke of inputs near the seeds,
//! the same on every run, without nightly.

/// xorshift64*: small, fast, the same sequence everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is moved off).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Bytes libFuzzer also tries: boundaries and the structure characters of JSON and
/// Jinja.
const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\"{}[]:,.-+e0 9\\%#\n";

/// Integers at the edges, little-endian (counts, lengths and offsets in headers).
const INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// A mutant of `seeds[pick]`: one to four mutations, `dict` tokens among them.
pub fn mutant(rng: &mut Rng, seeds: &[Vec<u8>], pick: usize, dict: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[pick].clone();
    for _ in 0..=rng.below(4) {
        mutate_once(rng, &mut data, seeds, dict);
    }
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>], dict: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = BYTES[rng.below(BYTES.len())];
        }
        2 if len > 0 => {
            let width = [1, 2, 4, 8][rng.below(4)].min(len);
            let at = rng.below(len - width + 1);
            let v = INTS[rng.below(INTS.len())].to_le_bytes();
            data[at..at + width].copy_from_slice(&v[..width]);
        }
        3 => data.truncate(rng.below(len + 1)),
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, chunk);
        }
        6 if !seeds.is_empty() => {
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        7 if !dict.is_empty() => {
            let token = &dict[rng.below(dict.len())];
            let at = rng.below(len + 1);
            data.splice(at..at, token.iter().copied());
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(at, BYTES[rng.below(BYTES.len())]);
        }
    }
}

/// The tokens of a libFuzzer dictionary (`name="value"` or `"value"` per line, `#`
/// comments, `\\`, `\"` and `\xNN` escapes).
pub fn parse_dict(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(start) = line.find('"') else {
            continue;
        };
        let Some(body) = line[start + 1..].strip_suffix('"') else {
            continue;
        };
        let mut token = Vec::new();
        let mut bytes = body.bytes();
        while let Some(b) = bytes.next() {
            if b != b'\\' {
                token.push(b);
                continue;
            }
            match bytes.next() {
                Some(b'x') => {
                    let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                    let hex = std::str::from_utf8(&hex).unwrap_or("");
                    token.extend(u8::from_str_radix(hex, 16).ok());
                }
                Some(other) => token.push(other),
                None => {}
            }
        }
        out.push(token);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_parse_with_escapes() {
        let d = parse_dict("# c\nkw1=\"a\\\"b\"\n\"\\x41\\\\\"\n\nbad\n");
        assert_eq!(d, vec![b"a\"b".to_vec(), b"A\\".to_vec()]);
    }

    #[test]
    fn mutants_are_deterministic_and_differ_from_the_seed() {
        let seeds = vec![b"{\"a\": 1}".to_vec(), b"xyz".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|i| mutant(&mut rng, &seeds, i % 2, &[]))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().filter(|m| !seeds.contains(m)).count() > 25);
    }
}
