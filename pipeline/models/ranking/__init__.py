"""The ranking model: EASE's item-to-item weights, solved in closed form, and its fit with λ chosen on validation."""
