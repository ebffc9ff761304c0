//! Property tests: the subject trie agrees with the naive per-pattern reference.

use proptest::prelude::*;
use switchboard::core::Pattern;
use switchboard::core::trie::SubjectTrie;

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("$s".to_string()),
        Just("".to_string()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5)
        .prop_map(|v| v.join("."))
        .prop_filter("non-empty", |s| !s.is_empty())
}

fn pattern() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![level(), Just("*".to_string()), Just("#".to_string())];
    prop::collection::vec(lvl, 1..5)
        .prop_map(|v| v.join("."))
        .prop_filter("non-empty", |s| !s.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn trie_matches_reference(patterns in prop::collection::vec(pattern(), 0..30), names in prop::collection::vec(name(), 1..10)) {
        let mut trie = SubjectTrie::new();
        let parsed: Vec<Pattern> = patterns.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        for (i, p) in parsed.iter().enumerate() {
            trie.insert(p, i);
        }
        for n in &names {
            let mut got = Vec::new();
            trie.matches(n, &mut got);
            // Each value is under one pattern: it must come back once, not once per path.
            got.sort();
            let want: Vec<usize> = parsed.iter().enumerate().filter(|(_, p)| p.matches(n)).map(|(i, _)| i).collect();
            prop_assert_eq!(got, want, "name {:?} patterns {:?}", n, patterns);
        }
    }

    #[test]
    fn removal_leaves_exactly_the_rest(patterns in prop::collection::vec(pattern(), 1..20), remove_mask in prop::collection::vec(any::<bool>(), 20), n in name()) {
        let mut trie = SubjectTrie::new();
        let parsed: Vec<Pattern> = patterns.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        for (i, p) in parsed.iter().enumerate() {
            trie.insert(p, i);
        }
        for (i, p) in parsed.iter().enumerate() {
            if remove_mask[i] {
                prop_assert!(trie.remove(p, &i));
            }
        }
        let mut got = Vec::new();
        trie.matches(&n, &mut got);
        got.sort();
        let want: Vec<usize> = parsed.iter().enumerate().filter(|(i, p)| !remove_mask[*i] && p.matches(&n)).map(|(i, _)| i).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn overlap_is_sound(a in pattern(), b in pattern(), n in name()) {
        // If some name matches both, overlaps() must say so.
        let (pa, pb) = (Pattern::parse(&a).unwrap(), Pattern::parse(&b).unwrap());
        if pa.matches(&n) && pb.matches(&n) {
            prop_assert!(pa.overlaps(&pb), "{} and {} both match {}", a, b, n);
        }
    }
}
