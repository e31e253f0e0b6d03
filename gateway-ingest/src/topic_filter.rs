//! MQTT topic-filter matching (MQTT 3.1.1 §4.7, 5.0 §4.7): does a
//! subscription-style filter (`+` one level, `#` this level and every level
//! below, as the last level) cover a topic name?
//!
//! Used for the third-party mappings' filters (`mapping::stage`) and for a
//! device's right to publish on them (`endpoint::auth`), both on topic names
//! any MQTT client chooses. It replaces `rumqttc::mqttbytes::matches`, which
//! panics on a topic whose first character is not ASCII (it slices
//! `topic[..1]`, rumqttc 0.25.1): one publish on `é/x` aborted the gateway
//! (found by the `mapping_payload` fuzz target, issue 14).
//!
//! Rules: a topic name with `+` or `#` is invalid and matches nothing; a
//! topic starting with `$` is not matched by a filter whose first level is
//! a wildcard (§4.7.2); `a/#` also matches `a` (its parent); levels may be
//! empty (`/x` has levels `""` and `x`). Filter validity is checked where
//! filters are configured, not here.

/// True when `filter` covers `topic` (the rules in the module doc).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.contains(['+', '#']) {
        return false;
    }
    let system = topic.starts_with('$');
    let mut levels = topic.split('/');
    for (i, f) in filter.split('/').enumerate() {
        if f == "#" {
            return !(i == 0 && system);
        }
        let Some(level) = levels.next() else {
            return false;
        };
        if f == "+" {
            if i == 0 && system {
                return false;
            }
            continue;
        }
        if f != level {
            return false;
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::matches;
    use proptest::prelude::*;

    #[test]
    fn a_topic_starting_with_a_multibyte_character_is_matched_not_a_panic() {
        assert!(matches("é/status", "+/status"));
        assert!(matches("\u{7df}", "#"));
        assert!(!matches("\u{7df}", "a/+"));
        assert!(matches("日本/x", "日本/x"));
    }

    #[test]
    fn wildcards_follow_the_mqtt_rules() {
        assert!(matches("sport/tennis/player1", "sport/tennis/+"));
        assert!(!matches("sport/tennis/player1/ranking", "sport/tennis/+"));
        assert!(matches("sport/tennis", "sport/tennis/#"));
        assert!(matches("sport", "sport/#"));
        assert!(matches("/finance", "+/+"));
        assert!(matches("/finance", "/+"));
        assert!(!matches("/finance", "+"));
        assert!(matches("a/b/c", "#"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn system_topics_are_not_matched_by_a_leading_wildcard() {
        assert!(!matches("$SYS/broker", "#"));
        assert!(!matches("$SYS/broker", "+/broker"));
        assert!(matches("$SYS/broker", "$SYS/#"));
        assert!(matches("$SYS/broker", "$SYS/broker"));
    }

    #[test]
    fn a_topic_name_with_wildcards_matches_nothing() {
        assert!(!matches("a/+", "a/+"));
        assert!(!matches("a/#", "#"));
    }

    proptest! {
        /// Where rumqttc's matcher does not panic and the topic does not
        /// start with `$` (rumqttc refuses every `$` topic, even for an
        /// exact filter), both agree.
        #[test]
        fn agrees_with_rumqttc_on_ascii_topics(
            topic in "[a-c/]{0,8}",
            filter in "[a-c/+#]{0,8}",
        ) {
            prop_assert_eq!(matches(&topic, &filter), rumqttc::mqttbytes::matches(&topic, &filter));
        }
    }
}
