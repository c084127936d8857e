use super::*;
use crate::runtime::StepOutput;
struct G;
impl AggregateCalls for G {
    fn fold(&mut self, r: FoldRequest) -> Result<FoldResult, AggregateError> {
        let mut out = FoldResult::default();
        for g in 0..r.fresh.len() {
            let n = (r.group_offsets[g + 1] - r.group_offsets[g]) as u64;
            let old = if r.fresh[g] == 1 {
                0
            } else {
                u64::from_le_bytes(r.accumulators.get(g).try_into().unwrap())
            };
            out.accumulators.push(&(old + n).to_le_bytes());
        }
        Ok(out)
    }
    fn merge(&mut self, r: MergeRequest) -> Result<Accumulators, AggregateError> {
        let mut out = Accumulators::default();
        for g in r.group_offsets.windows(2) {
            let n: u64 = (g[0]..g[1])
                .map(|i| u64::from_le_bytes(r.accumulators.get(i as usize).try_into().unwrap()))
                .sum();
            out.push(&n.to_le_bytes());
        }
        Ok(out)
    }
    fn finish(&mut self, r: FinishRequest) -> Result<StepOutput, AggregateError> {
        let mut out = StepOutput::default();
        for g in 0..r.final_.len() {
            out.records
                .push(Some(b"k"), Some(r.accumulators.get(g)), Some(0), []);
            out.inputs.push(g as u32);
            out.targets.push(0);
        }
        Ok(out)
    }
}
fn bench(yaml: &str) {
    let spec: WindowSpec = serde_yaml_ng::from_str(yaml).unwrap();
    let mut e = WindowEngine::new(spec).unwrap();
    let keys_n = 10_000u64;
    let batch = 1000;
    let batches = 1000;
    let mut x = 12345u64;
    let mut t = 0i64;
    let mut off = 0i64;
    let mut results = 0;
    let mut inproc = std::time::Duration::ZERO;
    let start = std::time::Instant::now();
    for b in 0..batches {
        let mut keys = vec![];
        let mut ko = vec![0u32];
        let mut times = vec![];
        let mut offs = vec![];
        for _ in 0..batch {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            keys.extend_from_slice(format!("user-{}", x % keys_n).as_bytes());
            ko.push(keys.len() as u32);
            if off % 100 == 0 {
                t += 1;
            }
            times.push(t - (x % 500) as i64);
            offs.push(off);
            off += 1;
        }
        let src = vec![0u16; batch];
        let parts = vec![0i32; batch];
        let t0 = std::time::Instant::now();
        let out = e
            .process(
                &mut G,
                BatchKeys {
                    keys: &keys,
                    key_offsets: &ko,
                    event_times: &times,
                    skip: &[],
                    sources: &src,
                    partitions: &parts,
                    offsets: &offs,
                },
                b as i64,
            )
            .unwrap();
        results += out.windows.len();
        inproc += t0.elapsed();
    }
    let el = start.elapsed();
    println!(
        "{yaml:?}: engine {:.2} M rec/s; {} records in {:?} = {:.2} M rec/s, {} results, rows {}, overhead/row {}",
        (batch * batches) as f64 / inproc.as_secs_f64() / 1e6,
        batch * batches,
        el,
        (batch * batches) as f64 / el.as_secs_f64() / 1e6,
        results,
        e.state_rows(),
        e.overhead_bytes_per_row()
    );
}
#[test]
fn perf() {
    bench("window: { tumbling: 1s }\nwatermark: { max_out_of_orderness: 1s }\n");
    bench(
        "window: { hopping: { size: 1s, slide: 200ms } }\nwatermark: { max_out_of_orderness: 1s }\n",
    );
    bench("window: { session: { gap: 500ms } }\nwatermark: { max_out_of_orderness: 1s }\n");
    bench("window: { tumbling: 1s }\nwatermark: { max_out_of_orderness: 1s }\noutput: update\n");
}
