//! Plausible vehicle movement for simulated terminals.
//!
//! Each simulated car starts somewhere in one of a few large Chinese cities and alternates
//! between driving (speed drifting toward a target, heading wandering, occasional turns) and
//! parking (ACC off, speed zero). The generator is deterministic for a given seed so two runs
//! with the same arguments send the same positions, and it never produces a jump that a car
//! could not drive: the gateway's sanitation must accept every fix as valid.
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// City centres (WGS-84) the simulated fleet is spread around.
const CITIES: [(f64, f64); 5] = [
    (31.2304, 121.4737), // Shanghai
    (22.5431, 114.0579), // Shenzhen
    (39.9042, 116.4074), // Beijing
    (30.5728, 104.0668), // Chengdu
    (23.1291, 113.2644), // Guangzhou
];

const METRES_PER_DEGREE: f64 = 111_320.0;

/// One position sample as a tracker would report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub latitude: f64,
    pub longitude: f64,
    pub altitude_m: u16,
    pub speed_kmh: f64,
    /// Heading in whole degrees, 0 = north, clockwise.
    pub course: u16,
    pub acc_on: bool,
    pub mileage_m: f64,
    pub satellites: u8,
    pub rssi: u8,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Driving { remaining_s: f64, target_kmh: f64 },
    Parked { remaining_s: f64 },
}

/// A deterministic random route for one car.
#[derive(Debug, Clone)]
pub struct Route {
    rng: SmallRng,
    lat: f64,
    lon: f64,
    heading_deg: f64,
    speed_kmh: f64,
    mileage_m: f64,
    altitude_m: f64,
    phase: Phase,
}

impl Route {
    /// Creates the route of car number `index` for a run seeded with `seed`.
    pub fn new(seed: u64, index: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (clat, clon) = CITIES[(index % CITIES.len() as u64) as usize];
        // Spread cars over roughly 20 km around the centre.
        let dlat = rng.random_range(-0.09..0.09);
        let dlon = rng.random_range(-0.09..0.09);
        let phase = if rng.random_bool(0.7) {
            Phase::Driving {
                remaining_s: rng.random_range(60.0..1800.0),
                target_kmh: rng.random_range(25.0..70.0),
            }
        } else {
            Phase::Parked {
                remaining_s: rng.random_range(30.0..600.0),
            }
        };
        Route {
            lat: clat + dlat,
            lon: clon + dlon,
            heading_deg: rng.random_range(0.0..360.0),
            speed_kmh: 0.0,
            mileage_m: rng.random_range(1_000_000.0..80_000_000.0),
            altitude_m: rng.random_range(5.0..500.0),
            phase,
            rng,
        }
    }

    /// Advances the car by `dt_s` seconds of simulated time and returns where it is then.
    pub fn step(&mut self, dt_s: f64) -> Sample {
        match &mut self.phase {
            Phase::Driving {
                remaining_s,
                target_kmh,
            } => {
                *remaining_s -= dt_s;
                let target = *target_kmh;
                if *remaining_s <= 0.0 {
                    self.phase = Phase::Parked {
                        remaining_s: self.rng.random_range(30.0..900.0),
                    };
                } else if self.rng.random_bool(0.02) {
                    // A new stretch of road: city street or urban expressway.
                    *target_kmh = if self.rng.random_bool(0.25) {
                        self.rng.random_range(70.0..110.0)
                    } else {
                        self.rng.random_range(20.0..60.0)
                    };
                }
                // Accelerate or brake at no more than about 3 m/s² toward the target speed.
                let max_delta = 10.0 * dt_s;
                let delta = (target - self.speed_kmh).clamp(-max_delta, max_delta);
                self.speed_kmh =
                    (self.speed_kmh + delta + self.rng.random_range(-1.0..1.0)).max(0.0);
                if self.rng.random_bool(0.03) {
                    // A turn at a junction.
                    let turn = if self.rng.random_bool(0.5) {
                        90.0
                    } else {
                        -90.0
                    };
                    self.heading_deg += turn;
                } else {
                    self.heading_deg += self.rng.random_range(-4.0..4.0);
                }
                self.heading_deg = self.heading_deg.rem_euclid(360.0);
                self.altitude_m =
                    (self.altitude_m + self.rng.random_range(-1.0..1.0)).clamp(0.0, 4000.0);
            }
            Phase::Parked { remaining_s } => {
                *remaining_s -= dt_s;
                self.speed_kmh = 0.0;
                if *remaining_s <= 0.0 {
                    self.phase = Phase::Driving {
                        remaining_s: self.rng.random_range(120.0..2400.0),
                        target_kmh: self.rng.random_range(20.0..60.0),
                    };
                }
            }
        }
        let distance_m = self.speed_kmh / 3.6 * dt_s;
        let heading = self.heading_deg.to_radians();
        self.lat += distance_m * heading.cos() / METRES_PER_DEGREE;
        self.lon += distance_m * heading.sin() / (METRES_PER_DEGREE * self.lat.to_radians().cos());
        self.mileage_m += distance_m;
        Sample {
            latitude: self.lat,
            longitude: self.lon,
            altitude_m: self.altitude_m as u16,
            speed_kmh: self.speed_kmh,
            course: (self.heading_deg.round() as u16) % 360,
            acc_on: matches!(self.phase, Phase::Driving { .. }) || self.speed_kmh > 0.0,
            mileage_m: self.mileage_m,
            satellites: self.rng.random_range(6..=16),
            rssi: self.rng.random_range(12..=31),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_route() {
        let mut a = Route::new(7, 3);
        let mut b = Route::new(7, 3);
        for _ in 0..500 {
            assert_eq!(a.step(1.0), b.step(1.0));
        }
    }

    #[test]
    fn never_jumps_further_than_a_car_can_drive() {
        let mut route = Route::new(1, 0);
        let mut prev = route.step(1.0);
        for _ in 0..20_000 {
            let next = route.step(1.0);
            let dy = (next.latitude - prev.latitude) * METRES_PER_DEGREE;
            let dx = (next.longitude - prev.longitude)
                * METRES_PER_DEGREE
                * next.latitude.to_radians().cos();
            let metres = (dx * dx + dy * dy).sqrt();
            // 130 km/h for one second is 36 m.
            assert!(metres < 40.0, "jump of {metres} m");
            assert!(next.speed_kmh < 130.0);
            assert!(next.mileage_m >= prev.mileage_m);
            prev = next;
        }
    }

    #[test]
    fn parks_and_drives() {
        let mut route = Route::new(3, 5);
        let samples: Vec<Sample> = (0..10_000).map(|_| route.step(1.0)).collect();
        assert!(samples.iter().any(|s| s.speed_kmh == 0.0 && !s.acc_on));
        assert!(samples.iter().any(|s| s.speed_kmh > 20.0 && s.acc_on));
    }
}
