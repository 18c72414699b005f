package sim

import "math"

func sqrtf(x float64) float64 { return math.Sqrt(x) }
