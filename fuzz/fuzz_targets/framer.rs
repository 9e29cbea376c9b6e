//! The framer under arbitrary bytes and arbitrary chunking: lines are never empty, never hold `\n`, never exceed
//! MAX_LINE, and the result does not depend on how the stream was split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::{LineFramer, MAX_LINE};

fn frame(data: &[u8], cuts: &[u16]) -> Vec<Result<Vec<u8>, ()>> {
    let mut f = LineFramer::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    for c in cuts {
        let mut input = &data[pos..c.max(pos)];
        pos = c.max(pos);
        while !input.is_empty() {
            let (used, item) = f.push(input);
            assert!(used > 0 && used <= input.len());
            match item {
                Some(Ok(line)) => {
                    assert!(!line.is_empty() && line.len() <= MAX_LINE && !line.contains(&b'\n'));
                    out.push(Ok(line.to_vec()));
                }
                Some(Err(_)) => out.push(Err(())),
                None => {}
            }
            input = &input[used..];
        }
        assert!(f.buffered() <= MAX_LINE + 1);
    }
    out
}

fuzz_target!(|input: (Vec<u16>, Vec<u8>)| {
    let (cuts, data) = input;
    let whole = frame(&data, &[]);
    let split = frame(&data, &cuts);
    assert_eq!(whole, split);
});
