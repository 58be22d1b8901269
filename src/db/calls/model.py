"""The ``calls`` table. Mirrors migration ba8c60a76780; change both together."""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Identity, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from src.db.database import Base


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), nullable=False, comment="Owner of the call")
    phone_number: Mapped[str] = mapped_column(
        String(32), nullable=False, comment="Number dialled, E.164"
    )
    is_active: Mapped[bool] = mapped_column(
        Boolean,
        nullable=False,
        server_default=text("true"),
        comment="False once the call has ended",
    )
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        nullable=False,
        server_default=text("now()"),
        onupdate=text("now()"),
    )

    __table_args__ = (Index("idx_user_active", "user_id", "is_active"),)
