//! A small lexicon sentiment scorer for English customer feedback, in the style of VADER
//! (Hutto & Gilbert 2014, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
//! Social Media Text"): words carry a valence on VADER's −4..4 scale, a negation within the
//! three preceding words flips and damps it (× −0.74), intensifiers ("very") and dampeners
//! ("slightly") before it add or remove 0.293 (less with distance), a word in capitals among
//! lower-case text adds 0.733, the clause after "but" counts 1.5× and the one before it 0.5×,
//! and exclamation marks add 0.292 each (up to four). The sum `s` is normalised to
//! `s / √(s² + 15)`, in −1..1.
//!
//! The word list is ours (a few hundred words that matter in shop feedback: service, delivery,
//! product quality, support), with valences chosen to sit close to VADER's published ones; it
//! is not VADER's lexicon. It is used at the edge (ingest) when feedback has text but no
//! sentiment; the text itself is never stored or forwarded.

/// Valences on VADER's −4..4 scale, sorted by word (checked by a test) for binary search.
const LEXICON: &[(&str, f32)] = &[
    ("abandoned", -1.9),
    ("abysmal", -3.1),
    ("accurate", 1.3),
    ("affordable", 1.5),
    ("amazing", 2.8),
    ("angry", -2.3),
    ("annoyed", -1.6),
    ("annoying", -1.9),
    ("appalling", -3.0),
    ("appreciate", 1.8),
    ("appreciated", 1.9),
    ("avoid", -1.2),
    ("awesome", 3.1),
    ("awful", -2.9),
    ("bad", -2.5),
    ("beautiful", 2.9),
    ("best", 3.2),
    ("better", 1.9),
    ("broke", -1.8),
    ("broken", -2.0),
    ("bug", -1.2),
    ("buggy", -1.9),
    ("careless", -1.5),
    ("charged", -0.6),
    ("cheap", 0.5),
    ("cheated", -2.6),
    ("clean", 1.7),
    ("clear", 1.2),
    ("comfortable", 1.8),
    ("complain", -1.5),
    ("complaint", -1.6),
    ("confused", -1.3),
    ("confusing", -1.5),
    ("convenient", 1.7),
    ("courteous", 2.0),
    ("crap", -2.5),
    ("damaged", -2.0),
    ("defective", -2.1),
    ("delay", -1.3),
    ("delayed", -1.4),
    ("delight", 2.9),
    ("delighted", 3.0),
    ("disappointed", -1.9),
    ("disappointing", -2.2),
    ("disappointment", -2.3),
    ("disaster", -3.1),
    ("disgusting", -2.9),
    ("dislike", -1.6),
    ("dissatisfied", -2.0),
    ("easy", 1.9),
    ("efficient", 1.8),
    ("enjoy", 2.2),
    ("enjoyed", 2.3),
    ("error", -1.4),
    ("excellent", 2.7),
    ("excited", 2.2),
    ("expensive", -0.9),
    ("fail", -2.3),
    ("failed", -2.3),
    ("failure", -2.3),
    ("fake", -2.1),
    ("fantastic", 2.6),
    ("fast", 1.2),
    ("fault", -1.7),
    ("faulty", -1.9),
    ("favorite", 2.0),
    ("favourite", 2.0),
    ("fine", 0.8),
    ("fix", 0.6),
    ("fixed", 1.0),
    ("flawless", 2.8),
    ("fraud", -2.8),
    ("friendly", 2.2),
    ("frustrated", -2.0),
    ("frustrating", -2.2),
    ("frustration", -2.1),
    ("glad", 2.0),
    ("good", 1.9),
    ("gorgeous", 3.0),
    ("grateful", 2.0),
    ("great", 3.1),
    ("happy", 2.7),
    ("hate", -2.7),
    ("hated", -3.0),
    ("helpful", 1.8),
    ("helpless", -2.0),
    ("hopeless", -2.1),
    ("horrible", -2.5),
    ("ignored", -1.6),
    ("impressed", 2.1),
    ("impressive", 2.3),
    ("incompetent", -2.3),
    ("incorrect", -1.6),
    ("issue", -0.8),
    ("issues", -0.9),
    ("junk", -2.0),
    ("kind", 2.0),
    ("late", -0.9),
    ("lie", -1.8),
    ("lied", -2.1),
    ("like", 1.5),
    ("liked", 1.8),
    ("lost", -1.3),
    ("love", 3.2),
    ("loved", 2.9),
    ("lovely", 2.8),
    ("loves", 2.7),
    ("mediocre", -1.0),
    ("mess", -1.5),
    ("misleading", -1.9),
    ("missing", -1.2),
    ("mistake", -1.5),
    ("nice", 1.8),
    ("nightmare", -2.8),
    ("ok", 0.9),
    ("okay", 0.9),
    ("outstanding", 3.0),
    ("overcharged", -2.0),
    ("overpriced", -1.7),
    ("pathetic", -2.7),
    ("perfect", 2.7),
    ("perfectly", 2.6),
    ("pleasant", 2.3),
    ("pleased", 1.9),
    ("polite", 1.8),
    ("poor", -2.1),
    ("poorly", -2.0),
    ("problem", -1.7),
    ("problems", -1.7),
    ("professional", 1.6),
    ("prompt", 1.2),
    ("quick", 1.2),
    ("quickly", 1.0),
    ("recommend", 1.5),
    ("recommended", 1.6),
    ("refund", -0.4),
    ("regret", -1.9),
    ("reliable", 1.9),
    ("resolved", 1.3),
    ("ridiculous", -2.0),
    ("rubbish", -2.2),
    ("rude", -2.0),
    ("sad", -2.1),
    ("satisfied", 1.8),
    ("scam", -2.6),
    ("seamless", 2.0),
    ("shame", -1.9),
    ("shocking", -1.9),
    ("simple", 1.0),
    ("slow", -1.2),
    ("smooth", 1.6),
    ("solved", 1.6),
    ("sorry", -0.3),
    ("stuck", -1.3),
    ("stupid", -2.4),
    ("superb", 3.1),
    ("terrible", -2.9),
    ("thank", 1.5),
    ("thanks", 1.9),
    ("thrilled", 2.9),
    ("trash", -2.1),
    ("trust", 2.0),
    ("ugly", -2.3),
    ("unacceptable", -2.0),
    ("unfortunately", -1.4),
    ("unhappy", -1.8),
    ("unhelpful", -1.8),
    ("unprofessional", -2.0),
    ("unreliable", -1.8),
    ("upset", -1.6),
    ("useful", 1.9),
    ("useless", -1.8),
    ("waiting", -0.5),
    ("waste", -1.8),
    ("wasted", -2.2),
    ("weird", -0.7),
    ("wonderful", 2.7),
    ("worse", -2.1),
    ("worst", -3.1),
    ("worthless", -1.9),
    ("wow", 2.8),
    ("wrong", -2.1),
];

/// Intensifiers (+) and dampeners (−), sorted.
const BOOSTERS: &[(&str, f32)] = &[
    ("absolutely", B_INCR),
    ("barely", B_DECR),
    ("completely", B_INCR),
    ("deeply", B_INCR),
    ("especially", B_INCR),
    ("exceptionally", B_INCR),
    ("extremely", B_INCR),
    ("fully", B_INCR),
    ("greatly", B_INCR),
    ("hardly", B_DECR),
    ("highly", B_INCR),
    ("hugely", B_INCR),
    ("incredibly", B_INCR),
    ("kinda", B_DECR),
    ("marginally", B_DECR),
    ("particularly", B_INCR),
    ("partly", B_DECR),
    ("quite", B_INCR),
    ("really", B_INCR),
    ("remarkably", B_INCR),
    ("scarcely", B_DECR),
    ("slightly", B_DECR),
    ("so", B_INCR),
    ("somewhat", B_DECR),
    ("sorta", B_DECR),
    ("super", B_INCR),
    ("too", B_INCR),
    ("totally", B_INCR),
    ("truly", B_INCR),
    ("utterly", B_INCR),
    ("very", B_INCR),
];

/// Words that negate what follows within three words (besides anything ending in "n't").
const NEGATIONS: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "didnt", "doesnt", "dont", "hadnt", "hasnt",
    "havent", "isnt", "neither", "never", "no", "nobody", "none", "nor", "not", "nothing",
    "nowhere", "shouldnt", "wasnt", "werent", "without", "wont", "wouldnt",
];

const B_INCR: f32 = 0.293;
const B_DECR: f32 = -0.293;
const NEGATION_SCALAR: f32 = -0.74;
const CAPS_EMPHASIS: f32 = 0.733;
const EXCLAMATION: f32 = 0.292;
/// VADER's normalisation constant: `s / √(s² + α)`.
const ALPHA: f32 = 15.0;

fn lookup(table: &[(&str, f32)], word: &str) -> Option<f32> {
    table
        .binary_search_by(|(w, _)| (*w).cmp(word))
        .ok()
        .map(|i| table[i].1)
}

fn is_negation(word: &str) -> bool {
    word.ends_with("n't") || NEGATIONS.binary_search(&word).is_ok()
}

struct Token {
    word: String,
    caps: bool,
}

/// Sentiment of English `text` in −1..1 (0 when no word carries sentiment). Pure and
/// deterministic.
pub fn score(text: &str) -> f32 {
    let mut tokens: Vec<Token> = Vec::new();
    let mut word = String::new();
    let mut upper = 0usize;
    let mut letters = 0usize;
    let flush =
        |word: &mut String, upper: &mut usize, letters: &mut usize, out: &mut Vec<Token>| {
            if !word.is_empty() {
                let caps = *letters > 1 && *upper == *letters;
                out.push(Token {
                    word: word.trim_matches('\'').to_string(),
                    caps,
                });
                word.clear();
            }
            *upper = 0;
            *letters = 0;
        };
    for c in text.chars() {
        let c = if c == '\u{2019}' { '\'' } else { c };
        if c.is_alphanumeric() || c == '\'' {
            if c.is_alphabetic() {
                letters += 1;
                if c.is_uppercase() {
                    upper += 1;
                }
            }
            word.extend(c.to_lowercase());
        } else {
            flush(&mut word, &mut upper, &mut letters, &mut tokens);
        }
    }
    flush(&mut word, &mut upper, &mut letters, &mut tokens);

    // Capitals only emphasise when the rest of the text is not shouting too.
    let mixed_case = tokens.iter().any(|t| !t.caps);
    let but = tokens.iter().position(|t| t.word == "but");
    let mut sum = 0.0f32;
    for (i, t) in tokens.iter().enumerate() {
        let Some(mut v) = lookup(LEXICON, &t.word) else {
            continue;
        };
        let sign = v.signum();
        if t.caps && mixed_case {
            v += sign * CAPS_EMPHASIS;
        }
        for (k, damp) in [(1usize, 1.0f32), (2, 0.95), (3, 0.9)] {
            if let Some(prev) = i.checked_sub(k).map(|j| &tokens[j]) {
                if let Some(b) = lookup(BOOSTERS, &prev.word) {
                    v += sign * b * damp;
                }
            }
        }
        if tokens[i.saturating_sub(3)..i]
            .iter()
            .any(|p| is_negation(&p.word))
        {
            v *= NEGATION_SCALAR;
        }
        match but {
            Some(b) if i < b => v *= 0.5,
            Some(b) if i > b => v *= 1.5,
            _ => {}
        }
        sum += v;
    }
    if sum != 0.0 {
        let bangs = text.chars().filter(|c| *c == '!').count().min(4) as f32;
        sum += sum.signum() * bangs * EXCLAMATION;
    }
    (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique_for_binary_search() {
        for table in [LEXICON, BOOSTERS] {
            assert!(
                table.windows(2).all(|w| w[0].0 < w[1].0),
                "{:?}",
                table.windows(2).find(|w| w[0].0 >= w[1].0)
            );
        }
        assert!(NEGATIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(LEXICON.iter().all(|(_, v)| (-4.0..=4.0).contains(v)));
    }

    #[test]
    fn given_no_sentiment_words_then_zero() {
        assert_eq!(score(""), 0.0);
        assert_eq!(score("The parcel arrived on Tuesday."), 0.0);
    }

    #[test]
    fn given_a_positive_word_then_positive_and_an_intensifier_raises_it() {
        let good = score("good");
        assert!(good > 0.3, "{good}");
        assert!(score("very good") > good);
        assert!(score("great") > good);
        assert!(score("slightly good") < good);
        assert!(score("good!!") > good);
        assert!(score("GOOD service") > score("good service"));
    }

    #[test]
    fn given_a_negation_then_the_valence_flips() {
        assert!(score("not good") < 0.0);
        assert!(score("didn't like it") < 0.0);
        assert!(score("isn’t helpful") < 0.0, "curly apostrophe");
        assert!(score("not bad at all") > 0.0);
        // Farther than three words away, the negation no longer applies.
        assert!(score("not that I would ever say good") > 0.0);
    }

    #[test]
    fn given_but_then_the_second_clause_dominates() {
        assert!(score("The product is great but the delivery was terrible") < 0.0);
        assert!(score("Delivery was slow but the support was excellent") > 0.0);
    }

    #[test]
    fn given_typical_feedback_then_sensible_values() {
        let bad =
            score("Terrible service, the support agent was rude and my refund is still missing!");
        assert!(bad < -0.7, "{bad}");
        let good = score("Thanks, super helpful and fast. Highly recommend!");
        assert!(good > 0.7, "{good}");
        for s in [bad, good] {
            assert!((-1.0..=1.0).contains(&s));
        }
    }
}
