"""PALM in a LangChain app: an LCEL chain and an agent, per user (bundled portfolio and policy).

The members here are LangChain's fake chat models, so the example runs anywhere; use
``OnnxChatModel(engine=OnnxEngine("models/<member>"))`` or any LangChain chat model instead.
Run: ``python examples/langchain/chain.py``.
"""

from __future__ import annotations

import itertools

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from palm_langchain import PalmChatModel, PalmFeedback, decision_of
from palm_middleware import MemoryStore, Pairwise, Palm, load_policy, load_portfolio
from palm_middleware.data import bundled


def member(name: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage(f"[{name}] an answer")]))


def main() -> None:
    portfolio = load_portfolio(bundled("portfolio.yaml"))
    palm = Palm(portfolio, load_policy(bundled("policy.yaml")), MemoryStore(), random_state=0)
    llm = PalmChatModel(palm=palm, members={m: member(m) for m in portfolio.ids})
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm
    alice = {"configurable": {"user_id": "alice"}}  # from YOUR authentication
    reply = chain.invoke({"q": "What is PALM?"}, config=alice)
    print("before:", decision_of(reply)["member"], "|", reply.content)
    feedback = PalmFeedback(palm)
    feedback.thumb(alice, reply, up=False)
    # In A/B comparisons alice keeps preferring the terse member's answers.
    for _ in range(4):
        for other in ("balanced", "thorough", "careful"):
            feedback.record(alice, Pairwise(winner="terse", loser=other))
    reply = chain.invoke({"q": "What is PALM?"}, config=alice)
    print("after: ", decision_of(reply)["member"], "|", reply.content)
    streamed = "".join((chain | StrOutputParser()).stream({"q": "hi"}, config=alice))
    print("stream:", streamed)
    bob = chain.invoke({"q": "What is PALM?"}, config={"configurable": {"user_id": "bob"}})
    print("bob:   ", decision_of(bob)["member"])


if __name__ == "__main__":
    main()
