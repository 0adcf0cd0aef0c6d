//! The smoke test that keeps the benches from rotting: every case of the quick scale is built
//! and run once, its reference inputs written as `.npy`, and a report rendered. No Python needed.

use dml_benches::measure::{self, Comparison};
use dml_benches::report::{self, Report, Row};
use dml_benches::{Scale, Topic, cases, init_threads};

#[test]
fn every_quick_case_runs_and_its_reference_inputs_are_written() -> anyhow::Result<()> {
    init_threads();
    let dir = tempfile::tempdir()?;
    let all = cases(Scale::Quick);
    for topic in Topic::ALL {
        assert!(all.iter().any(|c| c.topic == topic), "no case for {topic}");
    }
    let mut rows = Vec::new();
    for case in &all {
        let mut prepared = case.prepare()?;
        (prepared.run)().map_err(|e| e.context(case.id()))?;
        // Every case is compared with the reference stack, but those whose note says there is
        // nothing to compare with (re-ranking: no library does it at this size).
        let Some(reference) = prepared.reference.as_ref() else {
            assert!(
                case.note.ends_with("dml only"),
                "{} has no reference equivalent and its note does not say \"dml only\"",
                case.id()
            );
            rows.push(row(case, None));
            continue;
        };
        let inputs =
            measure::write_inputs(reference, &measure::inputs_dir(dir.path(), &case.id()))?;
        for path in inputs.values() {
            let path = path.as_str().expect("paths are strings");
            assert!(std::fs::metadata(path)?.len() > 0, "{path} is empty");
        }
        let request = measure::setup_request(reference, inputs, true);
        assert_eq!(request["op"], reference.op);
        rows.push(row(
            case,
            Some(Comparison {
                dml: vec![1.0],
                reference: vec![2.0],
                reps: (1, 1),
            }),
        ));
    }
    let md = report::render(&Report {
        scale: "quick".into(),
        rows,
        ..Default::default()
    });
    for case in &all {
        assert!(
            md.contains(&format!("| {} | {} |", case.function, case.parameter)),
            "{}",
            case.id()
        );
    }
    Ok(())
}

/// A report row for `case`, with a made-up comparison or none.
fn row(case: &dml_benches::Case, comparison: Option<Comparison>) -> Row {
    Row {
        id: case.id(),
        topic: case.topic.to_string(),
        function: case.function.clone(),
        parameter: case.parameter.clone(),
        items: case.items,
        unit: case.unit.into(),
        note: case.note.into(),
        data_note: case.data_note.map(Into::into),
        comparison,
        ..Default::default()
    }
}

#[test]
fn case_ids_are_unique_and_path_safe() {
    for scale in [Scale::Quick, Scale::Full] {
        let all = cases(scale);
        let mut ids: Vec<String> = all.iter().map(|c| c.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "duplicate case ids at {scale:?}");
        for c in &all {
            let ok = |s: &str| s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            assert!(
                ok(&c.function) && ok(&c.parameter),
                "{} is not a safe criterion path",
                c.id()
            );
        }
    }
}

#[test]
fn peak_memory_is_read_in_process() -> anyhow::Result<()> {
    let all = cases(Scale::Quick);
    let case = all
        .iter()
        .find(|c| c.peak_memory)
        .expect("a case with peak memory");
    let mut prepared = case.prepare()?;
    let peak = measure::peak_of(&mut prepared.run)?;
    assert!(peak.hwm_kib >= peak.rss_before_kib || !peak.reset);
    assert!(peak.hwm_kib > 0);
    Ok(())
}
