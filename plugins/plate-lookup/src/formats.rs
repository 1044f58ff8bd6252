//! Plate formats: patterns of letters and digits with the separators a
//! plate shows, and matching an OCR reading against them with the
//! confusions OCR makes (O for 0, 8 for B...).
//!
//! A pattern is written as the plate looks: `A` a letter, `9` a digit,
//! `{m,n}` after one of them repeats it m to n times, anything else is a
//! separator shown between groups. `AA-999-AA` is a French SIV plate.
//! Plates compare with separators removed ([`normalise`]).

/// One plate format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    groups: Vec<Group>,
    /// Letters this format never uses.
    excluded: Vec<char>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    /// The separator shown before this group ("" for the first).
    before: String,
    letters: bool,
    min: usize,
    max: usize,
}

/// The formats shipped, by name, as `(name, pattern, letters never used)`.
pub const BUILT_IN: &[(&str, &str, &str)] = &[
    ("fr-siv", "AA-999-AA", "IOU"),
    ("fr-fni", "9{1,4} A{1,3} 99", "IOU"),
    ("fr-fni-corse", "9{1,3} A{1,3} 9A", "IOU"),
    ("de", "A{1,3}-A{1,2} 9{1,4}", ""),
    ("it", "AA 999 AA", "IOQU"),
    ("es", "9999 AAA", "AEIOUQÑ"),
    ("nl", "AA-999-A", "AEIOUCQ"),
];

/// Uppercase letters and digits only: how plates compare, and the key rule
/// (`alphanumeric-upper`) the host imports the register with.
pub fn normalise(plate: &str) -> String {
    aviary_sdk::kv::alphanumeric_upper(plate)
}

impl Format {
    /// Parses `pattern` (see the module's doc); `excluded` letters never
    /// occur in plates of this format.
    pub fn parse(name: &str, pattern: &str, excluded: &str) -> Result<Format, String> {
        let mut groups: Vec<Group> = Vec::new();
        let mut before = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let letters = match c {
                'A' => true,
                '9' => false,
                '{' | '}' => return Err(format!("pattern `{pattern}`: `{{` must follow A or 9")),
                other => {
                    before.push(other);
                    continue;
                }
            };
            let (min, max) = if chars.peek() == Some(&'{') {
                chars.next();
                let spec: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let (lo, hi) = spec.split_once(',').unwrap_or((&spec, &spec));
                let parse = |s: &str| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("pattern `{pattern}`: `{{{spec}}}` is not {{m,n}}"))
                };
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo == 0 || hi < lo || hi > 8 {
                    return Err(format!(
                        "pattern `{pattern}`: `{{{spec}}}` must be 1 ≤ m ≤ n ≤ 8"
                    ));
                }
                (lo, hi)
            } else {
                (1, 1)
            };
            match groups.last_mut() {
                Some(last)
                    if before.is_empty()
                        && last.letters == letters
                        && min == 1
                        && max == 1
                        && last.min == last.max =>
                {
                    last.min += 1;
                    last.max += 1;
                }
                _ => groups.push(Group {
                    before: std::mem::take(&mut before),
                    letters,
                    min,
                    max,
                }),
            }
        }
        if groups.is_empty() {
            return Err(format!("pattern `{pattern}` has no A or 9"));
        }
        Ok(Format {
            name: name.to_owned(),
            groups,
            excluded: excluded.chars().collect(),
        })
    }

    /// The built-in format `name`.
    pub fn built_in(name: &str) -> Option<Format> {
        BUILT_IN
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(n, p, x)| Format::parse(n, p, x).expect("built-in patterns parse"))
    }

    /// The best way to read `text` (normalised) as this format: the plate
    /// as it should read, and how many characters had to be taken for a
    /// look-alike. `None` when it cannot be this format.
    pub fn fit(&self, text: &str) -> Option<(String, usize)> {
        let chars: Vec<char> = normalise(text).chars().collect();
        let mut best: Option<(Vec<char>, usize)> = None;
        self.fit_from(&chars, 0, Vec::new(), 0, &mut best);
        best.map(|(plate, swaps)| (plate.into_iter().collect(), swaps))
    }

    fn fit_from(
        &self,
        chars: &[char],
        group: usize,
        so_far: Vec<char>,
        swaps: usize,
        best: &mut Option<(Vec<char>, usize)>,
    ) {
        if best.as_ref().is_some_and(|(_, b)| *b <= swaps) {
            return;
        }
        let Some(g) = self.groups.get(group) else {
            if chars.is_empty() {
                *best = Some((so_far, swaps));
            }
            return;
        };
        for n in g.min..=g.max.min(chars.len()) {
            let mut taken = so_far.clone();
            let mut cost = swaps;
            let fits = chars[..n]
                .iter()
                .all(|&c| match self.as_class(c, g.letters) {
                    Some((read, swapped)) => {
                        taken.push(read);
                        cost += usize::from(swapped);
                        true
                    }
                    None => false,
                });
            if fits {
                self.fit_from(&chars[n..], group + 1, taken, cost, best);
            }
        }
    }

    /// `c` read as a letter (or a digit), and whether it had to be swapped
    /// for a look-alike.
    fn as_class(&self, c: char, letter: bool) -> Option<(char, bool)> {
        let ok = |c: char| {
            if letter {
                c.is_ascii_uppercase() && !self.excluded.contains(&c)
            } else {
                c.is_ascii_digit()
            }
        };
        if ok(c) {
            return Some((c, false));
        }
        let alike = if letter {
            digit_as_letter(c)
        } else {
            letter_as_digit(c)
        };
        alike.filter(|&a| ok(a)).map(|a| (a, true))
    }

    /// `plate` (normalised, fitting this format) with its separators.
    pub fn display(&self, plate: &str) -> String {
        let chars: Vec<char> = plate.chars().collect();
        let mut out = String::new();
        let mut at = 0;
        for (i, g) in self.groups.iter().enumerate() {
            // Take the most characters of this class the group allows.
            let mut n = 0;
            while at + n < chars.len()
                && n < g.max
                && (chars[at + n].is_ascii_digit() != g.letters)
                && (i + 1 == self.groups.len()
                    || self.groups[i + 1].letters != g.letters
                    || n < g.min)
            {
                n += 1;
            }
            out.push_str(&g.before);
            out.extend(&chars[at..at + n]);
            at += n;
        }
        out.extend(&chars[at..]);
        out
    }
}

fn digit_as_letter(c: char) -> Option<char> {
    Some(match c {
        '0' => 'O',
        '1' => 'I',
        '2' => 'Z',
        '4' => 'A',
        '5' => 'S',
        '6' => 'G',
        '7' => 'T',
        '8' => 'B',
        _ => return None,
    })
}

fn letter_as_digit(c: char) -> Option<char> {
    Some(match c {
        'O' | 'D' | 'Q' | 'U' => '0',
        'I' | 'L' | 'J' | 'T' => '1',
        'Z' => '2',
        'A' => '4',
        'S' => '5',
        'G' | 'C' => '6',
        'B' => '8',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(format: &str, text: &str) -> Option<(String, usize)> {
        Format::built_in(format).unwrap().fit(text)
    }

    #[test]
    fn each_built_in_format_reads_its_own_plates() {
        assert_eq!(fit("fr-siv", "AB-123-CD"), Some(("AB123CD".into(), 0)));
        assert_eq!(fit("fr-fni", "1234 AB 56"), Some(("1234AB56".into(), 0)));
        assert_eq!(fit("fr-fni", "123 ABC 75"), Some(("123ABC75".into(), 0)));
        assert_eq!(fit("fr-fni-corse", "12 AB 2A"), Some(("12AB2A".into(), 0)));
        assert_eq!(fit("de", "B-MW 1234"), Some(("BMW1234".into(), 0)));
        assert_eq!(fit("it", "AB 123 CD"), Some(("AB123CD".into(), 0)));
        assert_eq!(fit("es", "1234 BCD"), Some(("1234BCD".into(), 0)));
        assert_eq!(fit("nl", "GB-123-X"), Some(("GB123X".into(), 0)));
    }

    #[test]
    fn look_alikes_are_swapped_where_the_layout_says_and_counted() {
        assert_eq!(fit("fr-siv", "A8-I23-CD"), Some(("AB123CD".into(), 2)));
        assert_eq!(fit("fr-siv", "AB-12B-CD"), Some(("AB128CD".into(), 1)));
        // SIV never uses O: a 0 in a letter place stays unreadable as O.
        assert_eq!(fit("fr-siv", "0B-123-CD"), None);
        assert_eq!(fit("fr-siv", "06 12 34 56 78"), None);
        assert_eq!(fit("fr-siv", "AB-123-CDE"), None);
    }

    #[test]
    fn plates_show_with_their_separators() {
        let siv = Format::built_in("fr-siv").unwrap();
        assert_eq!(siv.display("AB123CD"), "AB-123-CD");
        let de = Format::built_in("de").unwrap();
        assert_eq!(de.display("BMW1234"), "B-MW 1234");
        assert_eq!(normalise(" ab-123 cd"), "AB123CD");
    }

    #[test]
    fn custom_patterns_parse_and_bad_ones_say_why() {
        let format = Format::parse("ch", "AA 9{1,6}", "").unwrap();
        assert_eq!(format.fit("ZH 123456"), Some(("ZH123456".into(), 0)));
        assert!(Format::parse("x", "AA{0,2}", "")
            .unwrap_err()
            .contains("1 ≤ m"));
        assert!(Format::parse("x", "--", "")
            .unwrap_err()
            .contains("no A or 9"));
    }
}
