//! The business calendar: weekends, public holidays and make-up working days (调休).
//!
//! Chinese public holidays move every year and are partly paid back by working on a Saturday
//! or Sunday, so the calendar is data, loaded from configuration, never computed.

use std::collections::BTreeSet;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

/// The calendar as configured: the State Council's holiday notice for each year.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarConfig {
    /// Days without business although they are weekdays (or weekend days inside a holiday).
    pub holidays: Vec<NaiveDate>,
    /// Saturdays and Sundays that are working days (调休).
    pub makeup_working_days: Vec<NaiveDate>,
}

/// Why a calendar configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("{0} is both a holiday and a make-up working day")]
    Contradiction(NaiveDate),
    #[error("{0} is a make-up working day but is not a Saturday or Sunday")]
    MakeupOnWeekday(NaiveDate),
    #[error("calendar configuration is not valid JSON: {0}")]
    Parse(String),
}

/// Which days banks do business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessCalendar {
    holidays: BTreeSet<NaiveDate>,
    makeup_working_days: BTreeSet<NaiveDate>,
}

/// Most days searched for the next working day: longer than any holiday run.
const SEARCH_DAYS: u64 = 60;

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl BusinessCalendar {
    pub fn new(config: CalendarConfig) -> Result<Self, CalendarError> {
        let holidays: BTreeSet<NaiveDate> = config.holidays.into_iter().collect();
        let makeup: BTreeSet<NaiveDate> = config.makeup_working_days.into_iter().collect();
        if let Some(day) = holidays.intersection(&makeup).next() {
            return Err(CalendarError::Contradiction(*day));
        }
        if let Some(day) = makeup.iter().find(|d| !is_weekend(**d)) {
            return Err(CalendarError::MakeupOnWeekday(*day));
        }
        Ok(BusinessCalendar {
            holidays,
            makeup_working_days: makeup,
        })
    }

    /// Reads `{"holidays": ["2026-10-01", ...], "makeup_working_days": [...]}`.
    pub fn from_json(text: &str) -> Result<Self, CalendarError> {
        let config: CalendarConfig =
            serde_json::from_str(text).map_err(|e| CalendarError::Parse(e.to_string()))?;
        Self::new(config)
    }

    /// The calendar as configuration again.
    pub fn config(&self) -> CalendarConfig {
        CalendarConfig {
            holidays: self.holidays.iter().copied().collect(),
            makeup_working_days: self.makeup_working_days.iter().copied().collect(),
        }
    }

    /// A working day is a weekday that is not a holiday, or a make-up working day.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.makeup_working_days.contains(&date) {
            return true;
        }
        !is_weekend(date) && !self.holidays.contains(&date)
    }

    /// The first working day on or after `date`, if one comes within sixty days.
    pub fn working_day_on_or_after(&self, date: NaiveDate) -> Option<NaiveDate> {
        (0..SEARCH_DAYS)
            .filter_map(|n| date.checked_add_days(Days::new(n)))
            .find(|d| self.is_working_day(*d))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    /// The National Day holiday of 2026 as announced: 1–7 October off, Sunday 27 September
    /// and Saturday 10 October worked.
    pub(crate) fn national_day_2026() -> BusinessCalendar {
        BusinessCalendar::from_json(
            r#"{
                "holidays": ["2026-10-01","2026-10-02","2026-10-03","2026-10-04",
                             "2026-10-05","2026-10-06","2026-10-07"],
                "makeup_working_days": ["2026-09-27","2026-10-10"]
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_make_up_saturday_is_a_working_day_and_a_holiday_weekday_is_not() {
        let cal = national_day_2026();
        assert!(cal.is_working_day(d("2026-10-10")), "make-up Saturday");
        assert!(cal.is_working_day(d("2026-09-27")), "make-up Sunday");
        assert!(
            !cal.is_working_day(d("2026-10-05")),
            "Monday in the holiday"
        );
        assert!(!cal.is_working_day(d("2026-10-17")), "ordinary Saturday");
        assert!(cal.is_working_day(d("2026-10-09")), "ordinary Friday");
    }

    #[test]
    fn the_next_working_day_skips_the_whole_golden_week() {
        let cal = national_day_2026();
        assert_eq!(
            cal.working_day_on_or_after(d("2026-10-01")),
            Some(d("2026-10-08"))
        );
        assert_eq!(
            cal.working_day_on_or_after(d("2026-10-09")),
            Some(d("2026-10-09"))
        );
    }

    #[test]
    fn contradictory_configuration_is_refused() {
        let both = CalendarConfig {
            holidays: vec![d("2026-10-10")],
            makeup_working_days: vec![d("2026-10-10")],
        };
        assert_eq!(
            BusinessCalendar::new(both),
            Err(CalendarError::Contradiction(d("2026-10-10")))
        );
        let weekday = CalendarConfig {
            holidays: vec![],
            makeup_working_days: vec![d("2026-10-09")],
        };
        assert_eq!(
            BusinessCalendar::new(weekday),
            Err(CalendarError::MakeupOnWeekday(d("2026-10-09")))
        );
        assert!(matches!(
            BusinessCalendar::from_json("{\"holidays\": [\"tomorrow\"]}"),
            Err(CalendarError::Parse(_))
        ));
    }

    #[test]
    fn configuration_round_trips() {
        let cal = national_day_2026();
        assert_eq!(BusinessCalendar::new(cal.config()).unwrap(), cal);
    }
}
