package canary

import "regexp"

// defaultPrompts are canary prompts: ordinary requests of the kinds
// consumers send (a story, an explanation, a list, a rewrite), so that a
// canary reads like any other request. The tiny test model only tells
// stories; real models answer all of them.
var defaultPrompts = []string{
	"Once upon a time, a little fox found a key in the snow.",
	"Write a short story about a girl who builds a boat.",
	"Tell me a story about a dog named Max and a red ball.",
	"Once upon a time there was a tiny dragon who was afraid of the dark.",
	"Write a bedtime story about the moon and a sleepy owl.",
	"Tell a story about two friends who plant a garden.",
	"Once upon a time, a boy named Tim wanted to fly a kite.",
	"Write a story about a cat who lives in a library.",
	"Explain why the sky is blue in two sentences.",
	"Give three tips for staying focused while studying.",
	"What is the difference between weather and climate?",
	"Summarize what photosynthesis is for a ten-year-old.",
	"List four fruits that are high in vitamin C.",
	"Explain what a prime number is, with an example.",
	"Describe how a bicycle works in simple words.",
	"Why do leaves change color in autumn?",
	"Write a haiku about the ocean.",
	"Suggest a name for a bakery and say why.",
	"Rewrite this sentence more politely: give me the report now.",
	"What are the planets of the solar system, in order?",
	"Explain recursion to a beginner programmer.",
	"Give a one-paragraph history of the printing press.",
	"How do vaccines train the immune system?",
	"Write a limerick about a forgetful robot.",
	"Once upon a time, a small bird lost its way home.",
	"Tell a story about a princess who loved to read.",
	"Describe a sunny day at the park.",
	"What should I pack for a weekend camping trip?",
	"Explain what an API is, in plain language.",
	"Write a story about a snowman who wants to see summer.",
}

// defaultFacts are simple factual questions with the pattern a right
// answer contains: a model of a billion parameters or more answers them;
// a node that claims such a model and does not is likely serving another.
var defaultFacts = []Fact{
	{"What is the capital of France? Answer in one word.", regexp.MustCompile(`(?i)\bparis\b`)},
	{"How many days are in a week? Answer with a number.", regexp.MustCompile(`(?i)\b(7|seven)\b`)},
	{"What is 12 plus 30? Answer with a number.", regexp.MustCompile(`\b42\b`)},
	{"Which planet is known as the Red Planet? Answer in one word.", regexp.MustCompile(`(?i)\bmars\b`)},
	{"What is the chemical symbol for water?", regexp.MustCompile(`(?i)\bh\s*2\s*o\b|\bh₂o\b`)},
	{"In which continent is Kenya? Answer in one word.", regexp.MustCompile(`(?i)\bafrica\b`)},
	{"What color do you get by mixing blue and yellow? Answer in one word.", regexp.MustCompile(`(?i)\bgreen\b`)},
}
