// GitTix: what JavaScript adds to pages that work without it.
"use strict";

// Prices: shown with two decimals when the field loses focus (12.5 -> 12.50).
function formatPrices() {
  for (const input of document.querySelectorAll("input[data-price]")) {
    input.addEventListener("blur", () => {
      const value = parseFloat(input.value);
      if (!Number.isNaN(value)) input.value = value.toFixed(2);
    });
  }
}

// The order page: the time left to pay, counting down; "Order Expired" once past.
function countDown() {
  const countdown = document.querySelector("[data-expires-at]");
  if (!countdown) return;
  const expiresAt = new Date(countdown.dataset.expiresAt).getTime();
  const seconds = countdown.querySelector("[data-seconds]");
  const expired = document.querySelector(".countdown-expired");
  const payment = document.querySelector("[data-payment]");
  const tick = () => {
    const left = Math.round((expiresAt - Date.now()) / 1000);
    if (left > 0) {
      seconds.textContent = String(left);
      return true;
    }
    countdown.hidden = true;
    if (expired) expired.hidden = false;
    if (payment) payment.hidden = true;
    return false;
  };
  if (tick()) {
    const timer = setInterval(() => { if (!tick()) clearInterval(timer); }, 1000);
  }
}

// Stripe Elements, when a publishable key is configured: the card becomes a token.
function stripeElements() {
  const mount = document.getElementById("card-element");
  if (!mount || typeof Stripe === "undefined") return;
  const stripe = Stripe(mount.dataset.stripeKey);
  const card = stripe.elements().create("card");
  card.mount(mount);
  const form = mount.closest("form");
  const errors = form.querySelector(".card-errors");
  form.addEventListener("submit", async (event) => {
    if (form.elements.token.value) return;
    event.preventDefault();
    const { token, error } = await stripe.createToken(card);
    if (error) {
      errors.textContent = error.message;
      return;
    }
    form.elements.token.value = token.id;
    form.submit();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  formatPrices();
  countDown();
  stripeElements();
});
