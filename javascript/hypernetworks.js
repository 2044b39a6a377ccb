// Hypernetwork cards and prompt editing, as AUTOMATIC1111 users know them.
//
// - Clicking a card (.hn-card, rendered by extension/ui/cards.py) toggles <hypernet:NAME:M> in the prompt
//   of the tab the card is on (txt2img or img2img, each has its cards): added with the card's default
//   multiplier M when absent, removed (with any multiplier) when present. Cards whose tag is in their
//   tab's prompt are marked .hn-card-active.
// - The card's i button opens its metadata view (through the tab's hidden #hn_action / #img2img_hn_action).
// - In a prompt box: Ctrl+Up / Ctrl+Down over a <...:M> tag changes M by 0.1; over (text:W) it changes
//   W; over a plain word or a selection it wraps it as (word:1.1) / (word:0.9). Ctrl+Enter generates.
//
// The text functions are pure and exposed as window.hypernetworksUI for tests.
// In a host's page (Forge, AUTOMATIC1111), which injects every javascript/*.js, this file does nothing: the host
// has its own card clicks and Ctrl+Up/Down, and the standalone page alone sets window.sdHypernetworksStandalone.
(function () {
  "use strict";
  if (window.sdHypernetworksStandalone !== true) {
    return;
  }

  const TABS = ["txt2img", "img2img"];
  const PROMPTS = ["txt2img_prompt", "txt2img_neg_prompt", "img2img_prompt", "img2img_neg_prompt"];
  const STEP = 0.1;

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
  }

  function formatWeight(value) {
    let text = String(parseFloat(value.toFixed(2)));
    return text === "-0" ? "0" : text;
  }

  function tagRegExp(name) {
    return new RegExp("<hypernet:" + escapeRegExp(name) + "(?::[^>]*)?>");
  }

  function hasTag(text, name) {
    return tagRegExp(name).test(text || "");
  }

  // Add <hypernet:NAME:M> when the prompt has no tag for NAME, otherwise remove that tag.
  function toggleTag(text, name, multiplier) {
    text = text || "";
    const match = tagRegExp(name).exec(text);
    if (match) {
      let start = match.index;
      let end = start + match[0].length;
      if (start > 0 && text[start - 1] === " ") start -= 1;
      else if (text[end] === " ") end += 1;
      return text.slice(0, start) + text.slice(end);
    }
    const tag = "<hypernet:" + name + ":" + formatWeight(Number(multiplier)) + ">";
    const separator = text === "" || /\s$/.test(text) ? "" : " ";
    return text + separator + tag;
  }

  // The [open, close] indexes of the `openChar ... closeChar` pair around the cursor, or null.
  function enclosing(text, cursor, openChar, closeChar) {
    let open = text.lastIndexOf(openChar, cursor - 1);
    if (open >= 0 && text.lastIndexOf(closeChar, cursor - 1) < open) {
      const close = text.indexOf(closeChar, open);
      if (close >= cursor) return [open, close];
    }
    if (cursor > 0 && text[cursor - 1] === closeChar) {  // just after the closing bracket
      open = text.lastIndexOf(openChar, cursor - 2);
      if (open >= 0 && text.lastIndexOf(closeChar, cursor - 2) < open) return [open, cursor - 1];
    }
    return null;
  }

  function result(text, selectionStart, selectionEnd) {
    return { text: text, selectionStart: selectionStart, selectionEnd: selectionEnd };
  }

  // Ctrl+Up (delta > 0) / Ctrl+Down (delta < 0): the new text and selection, or null to leave it alone.
  function editWeight(text, selectionStart, selectionEnd, delta) {
    text = text || "";
    // A tag <network:NAME:M>: change M (or add it to <network:NAME>).
    const tag = enclosing(text, selectionStart, "<", ">");
    if (tag) {
      const [open, close] = tag;
      const inner = text.slice(open + 1, close);
      if (!/^\w+:[^<>]+$/.test(inner)) return null;
      const parts = inner.split(":");
      let weight;
      if (parts.length === 2) {
        weight = 1 + delta;
        parts.push(formatWeight(weight));
      } else {
        const last = parts[parts.length - 1].trim();
        if (!/^-?(\d+\.?\d*|\.\d+)$/.test(last)) return null;
        parts[parts.length - 1] = formatWeight(parseFloat(last) + delta);
      }
      const replaced = parts.join(":");
      const newText = text.slice(0, open + 1) + replaced + text.slice(close);
      const newClose = open + 1 + replaced.length;
      return result(newText, Math.min(selectionStart, newClose), Math.min(selectionEnd, newClose));
    }
    // An attention group (text:W): change W.
    const group = selectionStart === selectionEnd ? enclosing(text, selectionStart, "(", ")") : null;
    if (group) {
      const [open, close] = group;
      const inner = text.slice(open + 1, close);
      const m = /^(.*):\s*(-?(?:\d+\.?\d*|\.\d+))\s*$/s.exec(inner);
      if (m) {
        const replaced = m[1] + ":" + formatWeight(parseFloat(m[2]) + delta);
        const newText = text.slice(0, open + 1) + replaced + text.slice(close);
        const newClose = open + 1 + replaced.length;
        return result(newText, Math.min(selectionStart, newClose), Math.min(selectionEnd, newClose));
      }
    }
    // A selection, or the word under the cursor: wrap it as (text:1.1).
    let start = selectionStart;
    let end = selectionEnd;
    if (start === end) {
      const isWord = (c) => c !== undefined && !/[\s,()<>:]/.test(c);
      while (start > 0 && isWord(text[start - 1])) start -= 1;
      while (end < text.length && isWord(text[end])) end += 1;
    }
    while (start < end && text[start] === " ") start += 1;
    while (end > start && text[end - 1] === " ") end -= 1;
    if (start === end) return null;
    const word = text.slice(start, end);
    const newText = text.slice(0, start) + "(" + word + ":" + formatWeight(1 + delta) + ")" + text.slice(end);
    return result(newText, start + 1, start + 1 + word.length);
  }

  // -- DOM ----------------------------------------------------------------------------------------------
  function appRoot() {
    const app = document.querySelector("gradio-app");
    return app && app.shadowRoot ? app.shadowRoot : document;
  }

  function promptBox(id) {
    return appRoot().querySelector("#" + id + " textarea");
  }

  function setValue(box, value, selectionStart, selectionEnd) {
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    if (selectionStart !== undefined) {
      box.selectionStart = selectionStart;
      box.selectionEnd = selectionEnd;
    }
  }

  // The tab an element is on: "img2img" inside #tab_img2img, else "txt2img".
  function tabOf(element) {
    return element && element.closest("#tab_img2img") ? "img2img" : "txt2img";
  }

  function markActiveCards() {
    const texts = {};
    TABS.forEach((tab) => {
      const box = promptBox(tab + "_prompt");
      texts[tab] = box ? box.value : "";
    });
    appRoot().querySelectorAll(".hn-card").forEach((card) => {
      card.classList.toggle("hn-card-active", hasTag(texts[tabOf(card)], card.dataset.name || ""));
    });
  }

  function openMetadata(name, tab) {
    const id = tab === "txt2img" ? "hn_action" : tab + "_hn_action";
    const box = appRoot().querySelector("#" + id + " textarea, #" + id + " input");
    if (!box) return;
    setValue(box, JSON.stringify({ action: "metadata", name: name, at: Date.now() }));
  }

  function cardClicked(card, event) {
    const name = card.dataset.name || "";
    if (!name) return;
    const tab = tabOf(card);
    if (event.target.closest(".hn-meta-button")) {
      openMetadata(name, tab);
      return;
    }
    if (card.classList.contains("hn-card-error")) {
      openMetadata(name, tab);  // a file that does not load: show why instead of adding a tag that fails
      return;
    }
    const box = promptBox(tab + "_prompt");
    if (!box) return;
    const container = card.closest(".hn-cards");
    const multiplier = card.dataset.multiplier || (container && container.dataset.defaultMultiplier) || "1";
    setValue(box, toggleTag(box.value, name, parseFloat(multiplier)));
    markActiveCards();
  }

  function onClick(event) {
    const target = event.composedPath ? event.composedPath()[0] : event.target;
    if (!(target instanceof Element)) return;
    const card = target.closest(".hn-card");
    if (card) {
      event.preventDefault();
      cardClicked(card, { target: target });
    }
  }

  function onKeyDown(event) {
    const target = event.composedPath ? event.composedPath()[0] : event.target;
    if (!(target instanceof HTMLTextAreaElement)) return;
    const owner = PROMPTS.find((id) => target.closest("#" + id));
    if (!owner) return;
    if (!(event.ctrlKey || event.metaKey)) return;
    if (event.key === "Enter") {
      event.preventDefault();
      const button = appRoot().querySelector("#" + owner.split("_")[0] + "_generate");
      if (button) button.click();
      return;
    }
    if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
    const edited = editWeight(target.value, target.selectionStart, target.selectionEnd,
      event.key === "ArrowUp" ? STEP : -STEP);
    if (!edited) return;
    event.preventDefault();
    setValue(target, edited.text, edited.selectionStart, edited.selectionEnd);
    if (owner.endsWith("_prompt") && !owner.endsWith("_neg_prompt")) markActiveCards();
  }

  function onInput(event) {
    const target = event.composedPath ? event.composedPath()[0] : event.target;
    if (target instanceof Element && target.closest("#txt2img_prompt, #img2img_prompt")) markActiveCards();
  }

  function onCardKey(event) {
    const target = event.composedPath ? event.composedPath()[0] : event.target;
    if (event.key === "Enter" && target instanceof Element && target.classList.contains("hn-card")) {
      event.preventDefault();
      cardClicked(target, { target: target });
    }
  }

  function install() {
    const root = appRoot();
    if (root.__hypernetworksInstalled) return;
    root.__hypernetworksInstalled = true;
    root.addEventListener("click", onClick);
    root.addEventListener("keydown", onKeyDown);
    root.addEventListener("keydown", onCardKey);
    root.addEventListener("input", onInput);
    // Cards are re-rendered by the server (search, sort, refresh): re-mark the active ones.
    new MutationObserver(() => {
      if (root.querySelector(".hn-card:not([data-marked])")) {
        root.querySelectorAll(".hn-card:not([data-marked])").forEach((c) => c.setAttribute("data-marked", ""));
        markActiveCards();
      }
    }).observe(root === document ? document.body : root, { childList: true, subtree: true });
  }

  window.hypernetworksUI = { toggleTag: toggleTag, editWeight: editWeight, hasTag: hasTag, formatWeight: formatWeight };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", install);
  } else {
    install();
  }
  // gradio-app may attach a shadow root after load; try again once it exists.
  window.addEventListener("load", install);
})();
